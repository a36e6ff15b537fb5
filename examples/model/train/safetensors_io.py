"""A small safetensors writer and reader: an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range in the data section, then the raw little-endian bytes."""

import json
import struct

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
TORCH_DTYPES = {name: dtype for dtype, name in DTYPES.items()}


def tensor_bytes(tensor):
    tensor = tensor.detach().contiguous().cpu()
    if tensor.dtype == torch.bfloat16:
        # numpy has no bfloat16: reinterpret the bits as int16, which has the same little-endian layout.
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


def save(tensors, path, metadata=None):
    header = {}
    chunks = []
    offset = 0
    for name, tensor in tensors.items():
        data = tensor_bytes(tensor)
        header[name] = {
            "dtype": DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad the header with spaces so the data section starts 8-byte aligned, as the reference library does.
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for data in chunks:
            f.write(data)


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    data = raw[8 + header_length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = TORCH_DTYPES[info["dtype"]]
        chunk = bytearray(data[start:end])
        if dtype == torch.bfloat16:
            tensor = torch.frombuffer(chunk, dtype=torch.int16).view(torch.bfloat16)
        else:
            tensor = torch.frombuffer(chunk, dtype=dtype)
        tensors[name] = tensor.reshape(info["shape"]).clone()
    return tensors
