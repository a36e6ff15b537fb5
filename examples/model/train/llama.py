"""A Llama 3 decoder in plain PyTorch, laid out so its state_dict keys are the transformers library's.

RoPE follows the transformers "rotate_half" convention: dimension i of a head is rotated together with
dimension i + head_dim/2, both by the angle position * inv_freq[i].
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def llama3_inv_freq(head_dim, rope_theta, rope_scaling):
    """Inverse RoPE frequencies (float64) by Meta's Llama 3.1 definition of rope_type "llama3".

    Frequencies whose wavelength is short against the original context are kept, long ones are divided by
    `factor`, and the band between is interpolated linearly in original_context / wavelength.
    """
    half = head_dim // 2
    inv_freq = [1.0 / (rope_theta ** (2 * i / head_dim)) for i in range(half)]
    if rope_scaling is None:
        return torch.tensor(inv_freq, dtype=torch.float64)
    assert rope_scaling["rope_type"] == "llama3"
    factor = rope_scaling["factor"]
    low = rope_scaling["low_freq_factor"]
    high = rope_scaling["high_freq_factor"]
    original = rope_scaling["original_max_position_embeddings"]
    low_freq_wavelen = original / low
    high_freq_wavelen = original / high
    scaled = []
    for freq in inv_freq:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            scaled.append(freq)
        elif wavelen > low_freq_wavelen:
            scaled.append(freq / factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            scaled.append((1 - smooth) * freq / factor + smooth * freq)
    return torch.tensor(scaled, dtype=torch.float64)


def rope_cos_sin(config, length, dtype):
    """cos and sin tables [length][head_dim], computed in float64 and rounded once to `dtype`."""
    inv_freq = llama3_inv_freq(config["head_dim"], config["rope_theta"], config.get("rope_scaling"))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config["num_attention_heads"]
        self.kv_heads = config["num_key_value_heads"]
        self.head_dim = config["head_dim"]
        hidden = config["hidden_size"]
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=False)

    def forward(self, x, cos, sin, mask):
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Query head h reads key/value head h // (heads / kv_heads), as transformers' repeat_kv does.
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)) * (self.head_dim**-0.5)
        scores = scores.masked_fill(mask, float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden, inner = config["hidden_size"], config["intermediate_size"]
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = RMSNorm(config["hidden_size"], config["rms_norm_eps"])
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config["hidden_size"], config["rms_norm_eps"])
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config["vocab_size"], config["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config["num_hidden_layers"])])
        self.norm = RMSNorm(config["hidden_size"], config["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)
        if config["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight
        self._rope = {}

    def init_weights(self, seed):
        generator = torch.Generator().manual_seed(seed)
        std = self.config["initializer_range"]
        # Residual outputs are scaled down by depth so the stream's variance does not grow with layers.
        residual_std = std / math.sqrt(2 * self.config["num_hidden_layers"])
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    p.fill_(1.0)
                elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                    p.copy_(torch.randn(p.shape, generator=generator) * residual_std)
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) * std)

    def rope(self, length, dtype):
        key = (length, dtype)
        if key not in self._rope:
            self._rope[key] = rope_cos_sin(self.config, length, dtype)
        return self._rope[key]

    def forward(self, ids):
        length = ids.shape[1]
        dtype = self.model.embed_tokens.weight.dtype
        cos, sin = self.rope(length, dtype)
        mask = torch.ones(length, length, dtype=torch.bool).triu(1)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.model.norm(x))

    def tensors_to_save(self):
        """The state_dict in transformers' names, without lm_head.weight when it is the embedding."""
        tensors = self.state_dict()
        if self.config["tie_word_embeddings"]:
            del tensors["lm_head.weight"]
        return tensors
