// SPDX-License-Identifier: GPL-2.0
/* sk_msg descriptor router. Runs on every sendmsg of a socket in
 * trb_sockets (the node agent's link and each function's): each descriptor
 * is redirected into the receive queue of its destination function's socket.
 * Everything else is passed on to the sender's peer, the node agent's
 * descriptor switch: malformed input (counted in slot 0, then dropped) and
 * descriptors whose destination has no socket (no route yet, not registered,
 * or dead), counted as undelivered and dropped there; the agent holds every
 * update until it is folded and re-sends it when it rebuilds the tree.
 * Nothing is ever delivered to the wrong function. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "tributary/ebpf/abi.h"

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, TRB_MAX_FUNCTIONS);
  __type(key, __u32);   /* function id */
  __type(value, __u64); /* socket (fd on update) */
} trb_sockets SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, TRB_MAX_ROUTES);
  __type(key, __u32);   /* route key */
  __type(value, __u32); /* function id */
} trb_routes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, TRB_MAX_FUNCTIONS);
  __type(key, __u32);
  __type(value, struct trb_counters);
} trb_counters SEC(".maps");

static __always_inline struct trb_counters *counters_of(__u32 fn) {
  return bpf_map_lookup_elem(&trb_counters, &fn);
}

SEC("sk_msg")
int trb_route(struct sk_msg_md *msg) {
  struct trb_counters *c;
  /* One verdict per descriptor, however many a sendmsg carries; a shorter
   * message gets a verdict of its own size, or the verdict would carry over
   * into the next message's bytes. */
  __u32 span = msg->size < sizeof(struct trb_descriptor) ? msg->size : sizeof(struct trb_descriptor);
  bpf_msg_apply_bytes(msg, span);

  void *data = msg->data;
  void *end = msg->data_end;
  if (data + sizeof(struct trb_descriptor) > end && msg->size >= sizeof(struct trb_descriptor)) {
    bpf_msg_pull_data(msg, 0, sizeof(struct trb_descriptor), 0);
    data = msg->data;
    end = msg->data_end;
  }
  struct trb_descriptor *d = data;
  if (data + sizeof(*d) > end || trb_classify(d, msg->size) == TRB_MALFORMED) {
    /* Passed to the agent, which drops it. Not SK_DROP: after a drop the
     * kernel keeps the drop verdict for the socket's later messages too
     * (tcp_bpf_send_verdict does not reset psock->eval on that path). */
    c = counters_of(TRB_NO_FUNCTION);
    if (c) c->drops++;
    return SK_PASS;
  }

  __u32 fn = d->dest_fn;
  if (fn == TRB_NO_FUNCTION) {
    __u32 key = d->route_key;
    __u32 *routed = bpf_map_lookup_elem(&trb_routes, &key);
    if (!routed || *routed == TRB_NO_FUNCTION || *routed >= TRB_MAX_FUNCTIONS) {
      c = counters_of(TRB_NO_FUNCTION);
      if (c) c->undelivered++;
      return SK_PASS; /* to the agent: no route yet */
    }
    fn = *routed;
  }
  __u64 length = d->length;
  c = counters_of(fn);
  if (bpf_msg_redirect_hash(msg, &trb_sockets, &fn, BPF_F_INGRESS) == SK_PASS) {
    if (c) {
      c->messages++;
      c->bytes += length;
    }
    return SK_PASS;
  }
  if (c) c->undelivered++;
  return SK_PASS; /* no socket for fn: to the switch, which counts and drops it */
}

char LICENSE[] SEC("license") = "GPL";
