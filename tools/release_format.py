"""DeepSeek V4 release-format helpers: numpy + stdlib only, so any tool can reuse them.

What the released checkpoints store (spec v4-architecture.md sections 2, 5, 12):
- FP8 linears: e4m3fn bytes (safetensors "F8_E4M3") plus one e8m0 scale byte
  ("F8_E8M0", value 2^(byte-127)) per 128x128 block, shape [ceil(rows/128), ceil(cols/128)].
- FP4 routed experts: "I8" [rows, cols/2], two e2m1 codes per byte, low nibble = even
  column; e8m0 scale per 32 inputs, shape [rows, cols/32].
- BF16 / F32 / I64 for the rest.

Every quantizer returns the stored bytes; the matching dequantizer gives the exact
float32 values a reader reconstructs, which is what the oracle must run on.
"""

import json
import struct

import numpy as np

FP8_MAX = 448.0
FP4_MAX = 6.0
FP8_BLOCK = 128
FP4_BLOCK = 32

# e2m1 code -> value; codes 8..15 are the negatives of 0..7 (8 is -0).
FP4_TABLE = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                      -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)

# safetensors dtype name -> bytes per element of the stored array
DTYPE_SIZE = {"F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BF16": 2, "F16": 2,
              "F32": 4, "I32": 4, "I64": 8, "F64": 8}


# ---------------------------------------------------------------- bf16

def bf16_bits(x):
    """float32 -> bf16 bit patterns (uint16), round to nearest even (no NaNs expected)."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def bf16_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def bf16_round(x):
    """The float32 value a bf16 store of x reads back as."""
    return bf16_to_f32(bf16_bits(x))


# ---------------------------------------------------------------- e8m0

def pow2_ceil_exponent(a):
    """Smallest integer e with 2^e >= a, for a > 0 (exact, via frexp)."""
    m, e = np.frexp(np.asarray(a, dtype=np.float64))
    return np.where(m == 0.5, e - 1, e).astype(np.int64)


def e8m0_to_f32(byte):
    return np.ldexp(np.float32(1.0), np.asarray(byte, dtype=np.int64) - 127).astype(np.float32)


def _e8m0_byte(exponent):
    if np.any(exponent < -127) or np.any(exponent > 127):
        raise ValueError("scale exponent out of e8m0 range")
    return (exponent + 127).astype(np.uint8)


# ---------------------------------------------------------------- e4m3fn

def e4m3_round(x):
    """Round float values with |x| <= 448 to the nearest e4m3fn value (ties to even)."""
    x = np.asarray(x, dtype=np.float64)
    if np.any(np.abs(x) > FP8_MAX):
        raise ValueError("e4m3_round: |x| > 448")
    _, e = np.frexp(x)                       # |x| = m * 2^e, m in [0.5, 1)
    exp = np.maximum(e - 1, -6)              # floor(log2|x|); subnormals share 2^-6's quantum
    quantum = np.ldexp(1.0, exp - 3)         # 3 mantissa bits
    return np.round(x / quantum) * quantum   # np.round: half to even


def e4m3_encode(v):
    """Exact e4m3fn values (from e4m3_round) -> bytes."""
    v = np.asarray(v, dtype=np.float64)
    sign = (np.signbit(v)).astype(np.uint8) << 7
    a = np.abs(v)
    _, e = np.frexp(a)
    exp = e - 1
    normal = a >= 2.0 ** -6
    field = np.where(normal, exp + 7, 0)
    mant = np.where(normal, a / np.ldexp(1.0, exp) - 1.0, a / 2.0 ** -9) * np.where(normal, 8.0, 1.0)
    mant_i = np.rint(mant).astype(np.int64)
    if np.any(np.abs(mant - mant_i) > 0) or np.any(mant_i > 7) or np.any(field > 15):
        raise ValueError("e4m3_encode: value not representable")
    code = (field.astype(np.int64) << 3) | mant_i
    code = np.where(a == 0, 0, code)
    return (sign | code.astype(np.uint8)).astype(np.uint8)


def e4m3_decode(byte):
    byte = np.asarray(byte, dtype=np.uint8).astype(np.int64)
    sign = np.where(byte & 0x80, -1.0, 1.0)
    field = (byte >> 3) & 0xF
    mant = byte & 7
    val = np.where(field == 0, mant * 2.0 ** -9, (1.0 + mant / 8.0) * np.ldexp(1.0, field - 7))
    if np.any((byte & 0x7F) == 0x7F):
        raise ValueError("e4m3_decode: NaN code")
    return (sign * val).astype(np.float32)


# ---------------------------------------------------------------- FP8 block quantization

def fp8_block_quantize(w, block=FP8_BLOCK, amax_floor=1e-4):
    """w [rows, cols] -> (e4m3 bytes [rows, cols], e8m0 scale bytes [ceil(rows/b), ceil(cols/b)]).
    Per block s = 2^ceil(log2(amax/448)), q = e4m3_RNE(w/s)."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    rb, cb = -(-rows // block), -(-cols // block)
    q = np.zeros((rows, cols), dtype=np.uint8)
    sc = np.zeros((rb, cb), dtype=np.uint8)
    for i in range(rb):
        for j in range(cb):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block].astype(np.float64)
            amax = max(float(np.max(np.abs(blk))), amax_floor)
            e = int(pow2_ceil_exponent(amax / FP8_MAX))
            sc[i, j] = _e8m0_byte(np.int64(e))
            q[i * block:(i + 1) * block, j * block:(j + 1) * block] = e4m3_encode(e4m3_round(np.ldexp(blk, -e)))
    return q, sc


def fp8_block_dequantize(q, sc, block=FP8_BLOCK):
    vals = e4m3_decode(q)
    s = e8m0_to_f32(sc)
    s_full = np.repeat(np.repeat(s, block, axis=0), block, axis=1)[:vals.shape[0], :vals.shape[1]]
    return (vals * s_full).astype(np.float32)


# ---------------------------------------------------------------- FP4 (e2m1) quantization

_FP4_GRID = FP4_TABLE[:8].astype(np.float64)  # 0 .5 1 1.5 2 3 4 6, codes 0..7


def e2m1_codes(x):
    """|x| <= 6 -> e2m1 codes (round to nearest, ties to the even code)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    if np.any(a > FP4_MAX):
        raise ValueError("e2m1_codes: |x| > 6")
    hi = np.clip(np.searchsorted(_FP4_GRID, a, side="left"), 0, 7)   # first grid >= a
    lo = np.clip(hi - 1, 0, 7)
    dlo, dhi = a - _FP4_GRID[lo], _FP4_GRID[hi] - a
    code = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    code = np.where(a == _FP4_GRID[hi], hi, code)
    neg = (x < 0) & (code != 0)
    return (code + np.where(neg, 8, 0)).astype(np.uint8)


def fp4_quantize(w, block=FP4_BLOCK):
    """w [rows, cols] (cols % 32 == 0) -> (packed int8 [rows, cols/2], e8m0 scales [rows, cols/32]).
    Per 32 inputs s = 2^ceil(log2(amax/6)); low nibble holds the even column."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    if cols % block or cols % 2:
        raise ValueError("fp4_quantize: cols must be a multiple of %d" % block)
    g = w.astype(np.float64).reshape(rows, cols // block, block)
    amax = np.maximum(np.max(np.abs(g), axis=2), FP4_MAX * 2.0 ** -126)
    e = pow2_ceil_exponent(amax / FP4_MAX)
    codes = e2m1_codes(np.ldexp(g, -e[:, :, None])).reshape(rows, cols)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return packed.view(np.int8), _e8m0_byte(e)


def fp4_unpack_codes(packed):
    p = np.asarray(packed).view(np.uint8)
    rows, half = p.shape
    codes = np.empty((rows, half * 2), dtype=np.uint8)
    codes[:, 0::2] = p & 0xF
    codes[:, 1::2] = p >> 4
    return codes


def fp4_dequantize(packed, sc, block=FP4_BLOCK):
    vals = FP4_TABLE[fp4_unpack_codes(packed)]
    s = np.repeat(e8m0_to_f32(sc), block, axis=1)
    return (vals * s).astype(np.float32)


# ---------------------------------------------------------------- stored tensors

class Stored:
    """One tensor as it goes into a file: safetensors dtype, shape, raw numpy storage."""

    def __init__(self, dtype, array, shape=None):
        self.dtype = dtype
        self.array = np.ascontiguousarray(array)
        self.shape = list(shape if shape is not None else self.array.shape)

    def nbytes(self):
        return self.array.nbytes


def store_bf16(x):
    return Stored("BF16", bf16_bits(x))


def store_f32(x):
    return Stored("F32", np.asarray(x, dtype=np.float32))


def store_i64(x):
    return Stored("I64", np.asarray(x, dtype=np.int64))


def store_fp8(w):
    """-> (weight Stored, scale Stored, dequantized float32)"""
    q, sc = fp8_block_quantize(w)
    return Stored("F8_E4M3", q), Stored("F8_E8M0", sc), fp8_block_dequantize(q, sc)


def store_fp4(w):
    packed, sc = fp4_quantize(w)
    return Stored("I8", packed), Stored("F8_E8M0", sc), fp4_dequantize(packed, sc)


def stored_to_f32(t):
    """Float view of a Stored tensor (FP8 / FP4 weights need their scale: use the dequantizers)."""
    if t.dtype == "BF16":
        return bf16_to_f32(t.array)
    if t.dtype == "F32":
        return t.array.astype(np.float32)
    raise ValueError("stored_to_f32: %s needs a scale" % t.dtype)


# ---------------------------------------------------------------- safetensors

def _order(tensors):
    # like the safetensors library: larger elements first, then by name, so that
    # every tensor starts at a multiple of its element size.
    return sorted(tensors, key=lambda n: (-DTYPE_SIZE[tensors[n].dtype], n))


def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> Stored. Returns the number of tensor-data bytes written."""
    header, offset = {}, 0
    names = _order(tensors)
    for n in names:
        t = tensors[n]
        size = t.nbytes()
        expect = DTYPE_SIZE[t.dtype] * int(np.prod(t.shape, dtype=np.int64))
        if size != expect:
            raise ValueError("%s: %d bytes for %s %s" % (n, size, t.dtype, t.shape))
        header[n] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for n in names:
            f.write(tensors[n].array.tobytes())
    return offset


_NP_OF = {"F8_E4M3": np.uint8, "F8_E8M0": np.uint8, "I8": np.int8, "U8": np.uint8,
          "BF16": np.uint16, "F32": np.float32, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """-> dict name -> Stored (a strict reader used to check what was written)."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    base = 8 + hlen
    out, spans = {}, []
    for n, h in header.items():
        if n == "__metadata__":
            continue
        b, e = h["data_offsets"]
        spans.append((b, e))
        arr = np.frombuffer(data[base + b:base + e], dtype=_NP_OF[h["dtype"]]).reshape(h["shape"])
        out[n] = Stored(h["dtype"], arr.copy(), h["shape"])
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise ValueError("%s: gap or overlap at %d" % (path, b))
        pos = e
    if base + pos != len(data):
        raise ValueError("%s: trailing bytes" % path)
    return out


def write_sharded(dirpath, tensors, shard_of, n_shards):
    """Writes model-0000i-of-0000n.safetensors + model.safetensors.index.json.
    shard_of(name) -> 0-based shard index."""
    import os
    groups = [dict() for _ in range(n_shards)]
    for n, t in tensors.items():
        groups[shard_of(n)][n] = t
    weight_map, total = {}, 0
    for i, g in enumerate(groups):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, n_shards)
        total += write_safetensors(os.path.join(dirpath, fname), g)
        for n in g:
            weight_map[n] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(dirpath, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return total


def self_test():
    """Exhaustive checks of the codecs against their definitions (numpy only)."""
    # every finite e4m3 byte round-trips through decode -> round -> encode
    codes = np.array([c for c in range(256) if (c & 0x7F) != 0x7F], dtype=np.uint8)
    vals = e4m3_decode(codes)
    assert np.array_equal(e4m3_round(vals), vals.astype(np.float64))
    enc = e4m3_encode(vals)
    assert np.array_equal(enc[vals != 0], codes[vals != 0])
    assert e4m3_decode(np.uint8(0x7E)) == 448.0 and e4m3_decode(np.uint8(0x01)) == 2.0 ** -9
    # ties to even: 1 + 1/16 lies between 1 and 1.125 -> 1; 1 + 3/16 -> 1.25
    assert e4m3_round(1.0625) == 1.0 and e4m3_round(1.1875) == 1.25
    # e2m1 ties to even code
    assert list(e2m1_codes(np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.0, 6.0]))) == \
        [0, 2, 2, 4, 4, 6, 6, 14, 7]
    # bf16 rounding
    assert bf16_round(np.float32(1.0 + 2.0 ** -8)) == 1.0
    assert bf16_round(np.float32(1.0 + 3 * 2.0 ** -8)) == np.float32(1.0 + 2.0 ** -6)
    # quantizers: scales bound the codes, dequantized values are exact in bf16
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((300, 200)) * np.exp(rng.standard_normal((300, 1)))).astype(np.float32)
    q, sc = fp8_block_quantize(w)
    assert sc.shape == (3, 2)
    d = fp8_block_dequantize(q, sc)
    assert np.array_equal(bf16_round(d), d)
    s8 = np.repeat(np.repeat(e8m0_to_f32(sc), 128, axis=0), 128, axis=1)[:300, :200]
    assert np.all(np.abs(d - w) <= np.maximum(np.abs(w) / 16, s8 * 2.0 ** -10) * (1 + 1e-6))
    assert np.all(np.abs(w) / s8 <= 448.0)
    p, s4 = fp4_quantize(w[:, :192])
    assert p.shape == (300, 96) and s4.shape == (300, 6) and p.dtype == np.int8
    d4 = fp4_dequantize(p, s4)
    assert np.array_equal(bf16_round(d4), d4)
    # each value is the nearest grid point of its block: error <= half the largest step (1) * scale
    s_full = np.repeat(e8m0_to_f32(s4), 32, axis=1)
    assert np.all(np.abs(d4 - w[:, :192]) <= s_full * 1.0 + 1e-12)
    # the scale is the smallest power of two keeping |w/s| <= 6
    amax = np.abs(w[:, :192]).reshape(300, 6, 32).max(axis=2)
    s = e8m0_to_f32(s4)
    assert np.all(amax / s <= 6.0) and np.all(amax / (s / 2) > 6.0)
    return True


if __name__ == "__main__":
    self_test()
    print("release_format self-test ok")
