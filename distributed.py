"""Training on several processes (torchrun) and the training state that --resume needs.

Every rank takes its slice of the same global batch (rank_part), forwards run through one module call
(SequenceLogps) so that DDP (LoRA) and FSDP2 (full fine-tuning) see them, and sums are reduced over ranks.
The training state is always saved as full (unsharded) CPU tensors, so a run resumes on any number of
processes. With one process (WORLD_SIZE unset) every function here is a no-op or plain PyTorch.
"""
import enum
import os
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from model import sequence_logps


class Distribution(enum.Enum):
    """How the policy is spread over processes: one process (NONE), DDP (LoRA: every rank holds the whole model
    and averages the adapters' gradients) or FSDP2 (full fine-tuning: weights, gradients and optimizer state
    sharded per transformer block)."""
    NONE = "none"
    DDP = "DDP"
    FSDP2 = "FSDP2"


class LaunchError(Exception):
    """A launch that cannot work (more processes than GPUs): the message says what to run instead."""


def pick_device(requested):
    """torch.device for this process: --device auto|cpu|cuda, and LOCAL_RANK's GPU under torchrun."""
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LaunchError("--device cuda but CUDA is not available (use --device cpu)")
    local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local_rank >= gpus:
        procs = os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1))
        raise LaunchError(f"torchrun started {procs} processes on this machine but {gpus} GPU(s) are visible: use "
                          f"--nproc_per_node={gpus}, or pass --device cpu to run the processes on CPU (gloo)")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def init_distributed(device):
    """(rank, world_size); joins the process group under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def all_reduce_sum(t, world):
    if world > 1:
        dist.all_reduce(t)
    return t


def reduce_sums(sums, world):
    """{name: tensor} summed over ranks (one all-reduce of the stacked values, names kept)."""
    names = sorted(sums)
    total = all_reduce_sum(torch.stack([torch.as_tensor(sums[k]).double() for k in names]), world)
    return dict(zip(names, total.tolist()))


def barrier(world):
    if world > 1:
        dist.barrier()


def rank_part(indices, rank, world):
    """This rank's contiguous slice of a global batch, and whether it is real (1.0) or a stand-in (0.0).
    A rank whose slice is empty runs the batch's first pair with weight 0, so that every rank makes
    the same forward/backward calls (DDP and FSDP need them in lockstep)."""
    part = np.array_split(np.asarray(indices), world)[rank]
    return (part, 1.0) if len(part) else (np.asarray(indices[:1]), 0.0)


class SequenceLogps(nn.Module):
    """model -> model.sequence_logps as a module call, so DDP / FSDP2 hooks see the whole forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, response_mask):
        return sequence_logps(self.model, input_ids, attention_mask, response_mask)


def shard_fsdp(module, world, device):
    """FSDP2: one shard group per transformer block, the rest (embeddings, norm, head) in the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device.type, (world,))
    for layer in module.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def wrap(seq, ref_seq, *, world, lora, device):
    """DDP for LoRA, FSDP2 for full fine-tuning, nothing for one process -> (seq, ref_seq, Distribution)."""
    if world == 1:
        return seq, ref_seq, Distribution.NONE
    if lora:
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(seq, device_ids=ids, broadcast_buffers=False)
        return ddp, ref_seq, Distribution.DDP
    ref_seq = None if ref_seq is None else shard_fsdp(ref_seq, world, device)  # sft has no reference
    return shard_fsdp(seq, world, device), ref_seq, Distribution.FSDP2


# ----------------------------------------------------------------------------------------------------
# The training state, as full CPU tensors (a collective call under FSDP2)


def rng_state():
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,  # this rank's device
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate()}


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])
    name, keys, *rest = s["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(s["python"])


def gather_training_state(seq, opt, lora):
    """{"weights", "optimizer", "rng"}: weights keyed like Transformer.state_dict(), only the trainable ones
    with LoRA; full (unsharded) CPU tensors."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=lora)
    trainable = {n for n, p in seq.named_parameters(remove_duplicate=False) if p.requires_grad}
    weights = {k.removeprefix("model."): v for k, v in get_model_state_dict(seq, options=opts).items()
               if k in trainable}
    return {"weights": weights, "optimizer": get_optimizer_state_dict(seq, opt, options=opts), "rng": rng_state()}


def restore_training_state(state, seq, opt):
    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(seq, {"model." + k: v for k, v in state["weights"].items()}, options=opts)
    set_optimizer_state_dict(seq, opt, optim_state_dict=state["optimizer"], options=opts)
    set_rng_state(state["rng"])


def full_weights(seq):
    """The whole model's weights gathered to CPU (FSDP2), keyed like Transformer.state_dict()."""
    full = get_model_state_dict(seq, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("model."): v for k, v in full.items()}
