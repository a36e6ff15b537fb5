// Rotary position embedding (Su et al. 2021, RoFormer), applied in place to q and k rows before use.
//
// Pair i of a head (i < dims/2) is rotated by the angle position · θ^(−2i/dims). The half-split layout
// (GPT-NeoX, Llama) pairs element i with i + dims/2; the interleaved layout (GPT-J) pairs 2i with 2i + 1.
// Elements from `dims` on are left as they are (partial rotary).
//
// The table holds the inverse frequencies and the attention factor once per cache, and the cos/sin of the
// last position rotated: a decode step rotates q and k of every layer at the same position, so each
// position costs one set of f64 cos/sin evaluations, not one per layer. Scaled RoPE (linear, llama3, yarn,
// explicit frequencies) is only other numbers in this table: the facade overwrites the frequencies and
// the factor in f64 after ropeFrequencies (src/rope-scaling.ts). The factor multiplies cos and sin, so it
// scales the rotated dimensions of q and k (YaRN's attention factor), and a factor of 1 changes no bit.
//   [0]            i32 position whose cos/sin are held (−1: none)
//   [8]            f64 attention factor (1: none)
//   [16 …)         f64 inverse frequency, dims/2 of them
//   then           f32 cos, dims/2; f32 sin, dims/2

export function ropeTableBytes(dims: i32): usize {
  const half = <usize>(dims >> 1);
  return 16 + half * 8 + half * 8;
}

export function ropeFrequencies(table: usize, dims: i32, theta: f64): void {
  const half = dims >> 1;
  store<i32>(table, -1);
  store<f64>(table + 8, 1.0);
  for (let i = 0; i < half; i++) {
    store<f64>(table + 16 + (<usize>i << 3), Math.pow(theta, -(<f64>(2 * i)) / <f64>dims));
  }
}

export function rope(
  rows: usize, tokens: i32, rowHeads: i32, headDim: i32, firstPosition: i32, dims: i32, interleaved: i32, table: usize,
): void {
  const half = dims >> 1;
  const factor = load<f64>(table + 8);
  const frequencies = table + 16;
  const cosines = frequencies + (<usize>half << 3);
  const sines = cosines + (<usize>half << 2);
  const rowBytes = <usize>headDim << 2;
  // element offsets (bytes) of the two members of pair i
  const firstStep: usize = interleaved ? 8 : 4;
  const partnerOffset: usize = interleaved ? 4 : <usize>half << 2;
  for (let t = 0; t < tokens; t++) {
    const position = firstPosition + t;
    if (load<i32>(table) != position) {
      for (let i = 0; i < half; i++) {
        const angle = <f64>position * load<f64>(frequencies + (<usize>i << 3));
        store<f32>(cosines + (<usize>i << 2), <f32>(Math.cos(angle) * factor));
        store<f32>(sines + (<usize>i << 2), <f32>(Math.sin(angle) * factor));
      }
      store<i32>(table, position);
    }
    let row = rows + <usize>(t * rowHeads) * rowBytes;
    for (let h = 0; h < rowHeads; h++) {
      for (let i = 0; i < half; i++) {
        const a = row + <usize>i * firstStep;
        const b = a + partnerOffset;
        const c = load<f32>(cosines + (<usize>i << 2));
        const s = load<f32>(sines + (<usize>i << 2));
        const x = load<f32>(a), y = load<f32>(b);
        store<f32>(a, x * c - y * s);
        store<f32>(b, y * c + x * s);
      }
      row += rowBytes;
    }
  }
}
