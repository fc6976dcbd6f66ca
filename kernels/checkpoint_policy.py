"""What a gradient-checkpointed transformer block keeps from its forward: everything recomputed ("full"), or the
outputs of its big matrix products and of attention kept, within a memory budget ("save-matmuls").

Checkpointing a block stores only its input and reruns its forward in the backward. The rerun costs
as much as the forward, but most of its time is in matrix products while most of its memory is in
elementwise intermediates. "save-matmuls" keeps, during the forward, the output of every
    z = x W^T   (aten.mm / aten.addmm) whose contraction dimension K >= min_contraction,
and of fused attention, until the block has kept budget_bytes; the rerun then reads those outputs
back and recomputes only the rest (norms, RoPE, SwiGLU, LoRA adds, residual adds, small matmuls).
Recomputing z costs 2 N K M flops for N M elements kept, so a large K earns its memory best; the
LoRA up-projections (K = rank) are cheap to redo and are not kept under the default threshold.
Built on torch.utils.checkpoint.create_selective_checkpoint_contexts; gradients are the same as
without checkpointing (the kept outputs are the forward's own values).
"""
import collections
import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts, noop_context_fn

POLICIES = ("full", "save-matmuls")
MIN_CONTRACTION = 1024  # keep z = x W^T only when W's input dimension is at least this

_aten = torch.ops.aten
MATMULS = {_aten.mm.default: 0, _aten.addmm.default: 1}  # op -> index of the [N, K] operand
ATTENTION = {getattr(_aten, name).default for name in (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(_aten, name)}


def _nbytes(out):
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, (tuple, list)):
        return sum(_nbytes(o) for o in out)
    return 0


def _output_bytes(ctx, op, args):
    """Bytes of the op's output: measured when the context carries it (torch >= 2.12), else from the shapes."""
    out = getattr(ctx, "op_output", None)
    if out is not None:
        return _nbytes(out)
    if op in MATMULS:
        a, b = args[MATMULS[op]], args[MATMULS[op] + 1]
        return a.shape[0] * b.shape[1] * a.element_size()
    return _nbytes(args[0])  # attention: the output is shaped like the query


def save_matmuls_policy(budget_bytes=None, min_contraction=None):
    """A fresh policy function (one per checkpointed call: it counts what that call keeps).

    Keeps a matmul output when K >= min_contraction (None: MIN_CONTRACTION), or an attention output,
    while the bytes kept stay within budget_bytes (None: no limit); recomputes everything else.
    Decisions are recorded in the forward and replayed in order if torch asks again during the
    recompute (torch < 2.12 does)."""
    min_contraction = MIN_CONTRACTION if min_contraction is None else min_contraction
    kept = [0]
    decisions = collections.defaultdict(list)
    replayed = collections.defaultdict(int)

    def policy(ctx, op, *args, **kwargs):
        if ctx.is_recompute:
            i = replayed[op]
            replayed[op] += 1
            return decisions[op][i % len(decisions[op])]
        save = op in ATTENTION or (op in MATMULS and args[MATMULS[op]].shape[-1] >= min_contraction)
        if save:
            size = _output_bytes(ctx, op, args)
            save = budget_bytes is None or kept[0] + size <= budget_bytes
            kept[0] += size if save else 0
        decision = CheckpointPolicy.MUST_SAVE if save else CheckpointPolicy.PREFER_RECOMPUTE
        decisions[op].append(decision)
        return decision
    return policy


def _save_matmuls_contexts(budget_bytes, min_contraction):
    return create_selective_checkpoint_contexts(save_matmuls_policy(budget_bytes, min_contraction))


def checkpoint_context_fn(policy="full", budget_bytes=None, min_contraction=None):
    """The context_fn argument of torch.utils.checkpoint.checkpoint for a policy in POLICIES."""
    if policy == "full":
        return noop_context_fn
    if policy == "save-matmuls":
        return functools.partial(_save_matmuls_contexts, budget_bytes, min_contraction)
    raise ValueError(f"checkpoint policy {policy!r} is not one of {', '.join(POLICIES)}")
