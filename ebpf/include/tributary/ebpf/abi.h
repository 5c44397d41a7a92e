/* The ABI between the kernel-side router (ebpf/bpf/router.bpf.c) and user
 * space: the descriptor that points at a block in the node's shared-memory
 * segment, the map keys and values, and the verdict logic both sides use.
 *
 * Plain C, included by the BPF program (after vmlinux.h) and by C++. Every
 * layout has a size assert on both sides; the descriptor carries a version.
 * A change of layout bumps TRB_DESCRIPTOR_VERSION. */
#ifndef TRIBUTARY_EBPF_ABI_H_
#define TRIBUTARY_EBPF_ABI_H_

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define TRB_DESCRIPTOR_MAGIC 0x44425254u /* "TRBD" little-endian */
#define TRB_DESCRIPTOR_VERSION 1

/* Function ids index the counters array: 1 .. TRB_MAX_FUNCTIONS-1.
 * Slot 0 of the counters holds what no function can be charged with. */
#define TRB_MAX_FUNCTIONS 4096
#define TRB_MAX_ROUTES 65536
#define TRB_NO_FUNCTION 0

enum trb_kind {
  TRB_KIND_UPDATE = 1,  /* a client update (from the gateway) */
  TRB_KIND_PARTIAL = 2, /* a partial aggregate (function to parent) */
  TRB_KIND_MODEL = 3,   /* a global model was published */
  TRB_KIND_CONTROL = 4, /* no block: a control event */
};

/* 64 bytes, one per message. dest_fn != 0 names the destination function;
 * dest_fn == 0 asks the router to map route_key through the route map. */
struct trb_descriptor {
  __u32 magic;
  __u8 version;
  __u8 kind;
  __u16 flags;
  __u32 dest_fn;
  __u32 route_key;
  __u64 job;
  __u64 round;
  __u64 offset;      /* block offset in the node's segment */
  __u64 length;      /* payload bytes the block holds */
  __u64 generation;  /* block generation: stale descriptors are detectable */
  __u64 weight_bits; /* IEEE-754 double: the update's aggregation weight */
};

/* Per function id, per CPU. */
struct trb_counters {
  __u64 messages;     /* descriptors delivered to the function */
  __u64 bytes;        /* payload bytes those descriptors reference */
  __u64 undelivered;  /* meant for it while it had no socket (slot 0: no route): passed to the agent */
  __u64 drops;        /* slot 0 only: malformed messages (the agent drops them) */
};

enum trb_verdict_kind {
  TRB_MALFORMED = 0,  /* drop and count */
  TRB_TO_FUNCTION = 1,
  TRB_BY_ROUTE = 2,
};

/* What to do with `len` bytes starting at `d`, before any map lookup. Pure,
 * so it is unit-tested in user space; sk_msg has no BPF_PROG_TEST_RUN. */
static inline int trb_classify(const struct trb_descriptor *d, __u32 len) {
  if (len < sizeof(struct trb_descriptor)) return TRB_MALFORMED;
  if (d->magic != TRB_DESCRIPTOR_MAGIC || d->version != TRB_DESCRIPTOR_VERSION) return TRB_MALFORMED;
  if (d->kind < TRB_KIND_UPDATE || d->kind > TRB_KIND_CONTROL) return TRB_MALFORMED;
  if (d->dest_fn >= TRB_MAX_FUNCTIONS) return TRB_MALFORMED;
  return d->dest_fn != TRB_NO_FUNCTION ? TRB_TO_FUNCTION : TRB_BY_ROUTE;
}

#ifdef __cplusplus
static_assert(sizeof(struct trb_descriptor) == 64, "descriptor ABI");
static_assert(sizeof(struct trb_counters) == 32, "counters ABI");
#else
_Static_assert(sizeof(struct trb_descriptor) == 64, "descriptor ABI");
_Static_assert(sizeof(struct trb_counters) == 32, "counters ABI");
#endif

#endif /* TRIBUTARY_EBPF_ABI_H_ */
