"""Writes a trained model in the Hugging Face layout (config.json, model.safetensors) and the reference
outputs that the JavaScript runner is checked against."""

import copy
import hashlib
import json
import os

import torch

import safetensors_io
from llama import LlamaForCausalLM


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True, ensure_ascii=True)
        f.write("\n")


def hf_config(config):
    """config.json as transformers' LlamaConfig writes it, with our values."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "head_dim": config["head_dim"],
        "hidden_act": "silu",
        "hidden_size": config["hidden_size"],
        "initializer_range": config["initializer_range"],
        "intermediate_size": config["intermediate_size"],
        "max_position_embeddings": config["max_position_embeddings"],
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": config["num_attention_heads"],
        "num_hidden_layers": config["num_hidden_layers"],
        "num_key_value_heads": config["num_key_value_heads"],
        "pad_token_id": None,
        "pretraining_tp": 1,
        "rms_norm_eps": config["rms_norm_eps"],
        "rope_scaling": dict(config["rope_scaling"]),
        "rope_theta": config["rope_theta"],
        "tie_word_embeddings": config["tie_word_embeddings"],
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": config["vocab_size"],
    }


def write_checkpoint(model, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), hf_config(model.config))
    path = os.path.join(out_dir, "model.safetensors")
    safetensors_io.save(model.tensors_to_save(), path, metadata={"format": "pt"})
    # Read the file back into a fresh model: what we ship must be what we measured.
    fresh = LlamaForCausalLM(model.config)
    missing = fresh.load_state_dict(safetensors_io.load(path), strict=False)
    expected_missing = ["lm_head.weight"] if model.config["tie_word_embeddings"] else []
    assert list(missing.missing_keys) == expected_missing and not missing.unexpected_keys, missing
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    return path


def read_checkpoint(out_dir):
    with open(os.path.join(out_dir, "config.json")) as f:
        config = json.load(f)
    model = LlamaForCausalLM(config)
    model.load_state_dict(safetensors_io.load(os.path.join(out_dir, "model.safetensors")), strict=False)
    return model.eval()


def write_logits(path, logits):
    """Row-major little-endian [tokens][vocab]; returns the file's sha256."""
    data = safetensors_io.tensor_bytes(logits)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


@torch.no_grad()
def greedy(model, prompt_ids, new_tokens):
    """Greedy continuation by a full forward pass per step (no cache), with each step's top-2 margin."""
    ids = list(prompt_ids)
    margins = []
    for _ in range(new_tokens):
        logits = model(torch.tensor([ids]))[0, -1]
        top = torch.topk(logits, 2)
        margins.append(float(top.values[0] - top.values[1]))
        ids.append(int(top.indices[0]))
    return ids[len(prompt_ids) :], margins


def decode(ids):
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@torch.no_grad()
def write_references(model, out_dir, held_out_ids, prompt_ids, new_tokens):
    model32 = model.float().eval()
    model64 = copy.deepcopy(model32).double()
    ids = torch.tensor([held_out_ids])
    logits32 = model32(ids)[0]
    logits64 = model64(ids)[0]
    diff = (logits32.double() - logits64).abs().max().item()
    top1_agree = (logits32.argmax(-1) == logits64.argmax(-1)).float().mean().item()
    f32_sha = write_logits(os.path.join(out_dir, "reference-logits.f32.bin"), logits32)
    f64_sha = write_logits(os.path.join(out_dir, "reference-logits.f64.bin"), logits64)

    new64, margins = greedy(model64, prompt_ids, new_tokens)
    new32, _ = greedy(model32, prompt_ids, new_tokens)
    tokens, vocab = logits64.shape
    reference = {
        "format": "tiny-llama-reference/1",
        "tokenizer": "bytes: a text's UTF-8 bytes are its ids (0-255); 256 is BOS, 257 is EOS",
        "logits": {
            "text": decode(held_out_ids),
            "ids": list(held_out_ids),
            "shape": [tokens, vocab],
            "float64": {"file": "reference-logits.f64.bin", "dtype": "float64", "sha256": f64_sha},
            "float32": {"file": "reference-logits.f32.bin", "dtype": "float32", "sha256": f32_sha},
            "layout": "little-endian, row-major [shape[0]][shape[1]]: row t is the logits after ids[0..t]",
            "float32_max_abs_diff_from_float64": diff,
            "float32_top1_agreement_with_float64": top1_agree,
        },
        "greedy": {
            "prompt_text": decode(prompt_ids),
            "prompt_ids": list(prompt_ids),
            "new_ids": new64,
            "new_text": decode(new64),
            "float32_new_ids_equal": new32 == new64,
            "min_top2_margin_float64": min(margins),
        },
    }
    write_json(os.path.join(out_dir, "reference.json"), reference)
    return reference
