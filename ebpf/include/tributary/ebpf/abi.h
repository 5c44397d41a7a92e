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
/* 2: 80 bytes; every field has one meaning (v1 reused job, route_key,
 * length and flags for hellos, task ids and dtypes). */
#define TRB_DESCRIPTOR_VERSION 2

/* Function ids index the counters array: 1 .. TRB_MAX_FUNCTIONS-1.
 * Slot 0 of the counters holds what no function can be charged with. */
#define TRB_MAX_FUNCTIONS 4096
#define TRB_MAX_ROUTES 65536
#define TRB_NO_FUNCTION 0
#define TRB_AGENT_FN 1 /* the node agent's own link: hellos and results go there */

enum trb_kind {
  TRB_KIND_UPDATE = 1,  /* a client update block, agent to leaf */
  TRB_KIND_PARTIAL = 2, /* a partial aggregate block, function to parent (or a leaf's commit to the agent) */
  TRB_KIND_TASK = 3,    /* a FunctionTask block, agent to function */
  TRB_KIND_HELLO = 4,   /* no block: a function announces itself to the agent */
  TRB_KIND_HEARTBEAT = 5, /* no block: a function's loop is alive (every 250 ms), to the agent */
};

/* One per message. dest_fn != 0 names the destination function; dest_fn == 0
 * asks the router to map route_key through the route map. Fields a kind does
 * not use are 0. */
struct trb_descriptor {
  __u32 magic;
  __u8 version;
  __u8 kind;
  __u8 dtype;         /* UPDATE: the payload's transport dtype (agg::DType 1..4; 0 is read as f32) */
  __u8 reserved;
  __u32 dest_fn;
  __u32 src_fn;       /* the sending function, or TRB_AGENT_FN */
  __u32 route_key;    /* UPDATE: the client's route key */
  __u32 slot;         /* PARTIAL: the input's place in the receiver's fold order */
  __u32 lease;        /* HELLO: the sender's lease in the node's segment */
  __u32 payload_port; /* HELLO: the sender's loopback payload port (serverful transport only) */
  __u64 task;         /* UPDATE, PARTIAL, TASK: the task the block belongs to */
  __u64 round;
  __u64 offset;       /* the block's offset in the node's segment */
  __u64 length;       /* payload bytes the block holds */
  __u64 generation;   /* block generation: stale descriptors are detectable */
  __u64 weight_bits;  /* IEEE-754 double: the aggregation weight */
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
  if (d->kind < TRB_KIND_UPDATE || d->kind > TRB_KIND_HEARTBEAT) return TRB_MALFORMED;
  if (d->dest_fn >= TRB_MAX_FUNCTIONS) return TRB_MALFORMED;
  return d->dest_fn != TRB_NO_FUNCTION ? TRB_TO_FUNCTION : TRB_BY_ROUTE;
}

/* The layouts both sides compile, checked on both sides. */
#ifdef __cplusplus
#define TRB_ASSERT(cond, what) static_assert(cond, what)
#else
#define TRB_ASSERT(cond, what) _Static_assert(cond, what)
#endif
TRB_ASSERT(sizeof(struct trb_descriptor) == 80, "descriptor ABI");
TRB_ASSERT(__builtin_offsetof(struct trb_descriptor, dest_fn) == 8, "descriptor ABI");
TRB_ASSERT(__builtin_offsetof(struct trb_descriptor, route_key) == 16, "descriptor ABI");
TRB_ASSERT(__builtin_offsetof(struct trb_descriptor, task) == 32, "descriptor ABI");
TRB_ASSERT(__builtin_offsetof(struct trb_descriptor, length) == 56, "descriptor ABI");
TRB_ASSERT(__builtin_offsetof(struct trb_descriptor, weight_bits) == 72, "descriptor ABI");
TRB_ASSERT(sizeof(struct trb_counters) == 32, "counters ABI");
TRB_ASSERT(__builtin_offsetof(struct trb_counters, drops) == 24, "counters ABI");
#undef TRB_ASSERT

#endif /* TRIBUTARY_EBPF_ABI_H_ */
