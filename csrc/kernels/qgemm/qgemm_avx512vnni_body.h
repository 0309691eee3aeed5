// AVX-512 VNNI micro-kernels: vpdpbusd adds four u8*s8 products into an int32 lane with
// no intermediate saturation, so every weight takes the fast path.
//
// This body is compiled twice: against <immintrin.h> with the AVX-512 target
// (qgemm_avx512vnni.cc), and against a portable model of the same intrinsics
// (qgemm_avx512vnni_emulated.cc), so its logic is tested bit for bit on CPUs without the
// instructions. The including file opens the namespace, defines PYRT_AVX512 and
// dpbusd(acc, a, b), and includes epilogue_avx512_body.h. Intrinsics used here must exist
// in emulated_avx512.h.

constexpr int kMr = 12;
constexpr int kNr = 32;  // two zmm of int32 lanes

void pack_b(const int8_t* b, int K, int N, PackedPanels& out) {
  pack_b_quads(b, K, N, kNr, out);
  out.variant = 0;
}

// A packed tile: its nonzero steps' quads, [listed][kMr][4] u8 (compact_nonzero_steps),
// then the step each came from, then how many there are.
size_t step_list_offset(const PackedPanels& b) { return size_t(b.k_padded) * kMr; }

size_t a_tile_bytes(const PackedPanels& b) {
  return size_t(round_up(int(step_list_offset(b)) + 4 * (b.k_padded / 4 + 1), 64));
}

void pack_a(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, const PackedPanels& b,
            uint8_t* tile) {
  pack_a_quads(a, lda, a_signed, rows, K, b.k_padded, kMr, tile);
  const int slots = b.k_padded / 4;
  auto* step_of = reinterpret_cast<int32_t*>(tile + step_list_offset(b));
  step_of[slots] = compact_nonzero_steps<kMr>(tile, slots, step_of);
}

// Where A comes from: a packed tile, or the rows themselves (for GEMMs with so few
// columns that packing A would cost more than it saves). Of its `steps` steps, the first
// `full` read whole quads; the rest (a ragged end of K, rows read in place only) go
// through tail(). Step s meets B's step b_step(s).
struct PackedQuadsA {  // [listed][kMr][4] u8: the tile's nonzero steps (see pack_a)
  const uint8_t* tile;
  const int32_t* step_of;
  int full, steps;
  PYRT_AVX512 __m512i operator()(int s, int r) const { return _mm512_set1_epi32(load_u32(tile + (s * kMr + r) * 4)); }
  PYRT_AVX512 __m512i tail(int s, int r) const { return (*this)(s, r); }
  PYRT_AVX512 int b_step(int s) const { return step_of[s]; }
};

template <bool Flip>  // s8 rows become A' (xor 0x80) on the way in
struct RowsQuadsA {
  const uint8_t* a;
  ptrdiff_t lda;
  int K, full, steps;
  PYRT_AVX512 __m512i operator()(int s, int r) const {
    const __m512i v = _mm512_set1_epi32(load_u32(a + r * lda + 4 * s));
    return Flip ? _mm512_xor_si512(v, _mm512_set1_epi32(int32_t(0x80808080u))) : v;
  }
  // Bytes past K read as zero (they meet B's zero padding) and are never loaded: the
  // last row may end at the end of the buffer.
  PYRT_AVX512 __m512i tail(int s, int r) const {
    uint8_t q[4] = {0, 0, 0, 0};
    for (int k = 4 * s; k < K; ++k) q[k - 4 * s] = uint8_t(a[r * lda + k] ^ (Flip ? 0x80 : 0));
    return _mm512_set1_epi32(load_u32(q));
  }
  PYRT_AVX512 int b_step(int s) const { return s; }
};

// A direct convolution's rows read from its padded band (QgemmKernels::tile_band).
struct BandQuadsA {
  const uint8_t* band;
  const int32_t* quad_offset;
  ptrdiff_t step;
  int full, steps;
  PYRT_AVX512 __m512i operator()(int s, int r) const {
    return _mm512_set1_epi32(load_u32(band + quad_offset[s] + r * step));
  }
  PYRT_AVX512 __m512i tail(int s, int r) const { return (*this)(s, r); }
  PYRT_AVX512 int b_step(int s) const { return s; }
};

template <int R, typename ASource>
PYRT_AVX512 void tile_rows(const ASource& a_src, const PackedPanels& b, int panel, int cols, int m0, int n0,
                           const Epilogue& ep) {
  __m512i acc[R][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  const uint8_t* bp = b.panel(panel);
// Two k steps per iteration: +4% of peak on Zen 4 (more only grew the code).
#pragma GCC unroll 2
  for (int s = 0; s < a_src.full; ++s) {
    const uint8_t* bs = bp + ptrdiff_t(a_src.b_step(s)) * 128;
    const __m512i b0 = load(bs), b1 = load(bs + 64);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512i a = a_src(s, r);
      acc[r][0] = dpbusd(acc[r][0], a, b0);
      acc[r][1] = dpbusd(acc[r][1], a, b1);
    }
  }
  for (int s = a_src.full; s < a_src.steps; ++s) {
    const uint8_t* bs = bp + ptrdiff_t(a_src.b_step(s)) * 128;
    const __m512i b0 = load(bs), b1 = load(bs + 64);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512i a = a_src.tail(s, r);
      acc[r][0] = dpbusd(acc[r][0], a, b0);
      acc[r][1] = dpbusd(acc[r][1], a, b1);
    }
  }
  const Store16 left(ep, n0, cols);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) left(acc[r][0], m0 + r);
  if (cols <= 16) return;
  const Store16 right(ep, n0 + 16, cols - 16);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) right(acc[r][1], m0 + r);
}

template <int R, typename ASource>
void tile_upto(const ASource& a_src, const PackedPanels& b, int panel, int rows, int cols, int m0, int n0,
               const Epilogue& ep) {
  if (rows == R) return tile_rows<R>(a_src, b, panel, cols, m0, n0, ep);
  if constexpr (R > 1) tile_upto<R - 1>(a_src, b, panel, rows, cols, m0, n0, ep);
}

void tile(const uint8_t* a_tile, const PackedPanels& b, int panel, int rows, int cols, int m0, int n0,
          const Epilogue& ep) {
  const int slots = b.k_padded / 4;
  const auto* step_of = reinterpret_cast<const int32_t*>(a_tile + step_list_offset(b));
  const int listed = step_of[slots];
  tile_upto<kMr>(PackedQuadsA{a_tile, step_of, listed, listed}, b, panel, rows, cols, m0, n0, ep);
}

void tile_inplace(const uint8_t* a, ptrdiff_t lda, bool a_signed, int K, const PackedPanels& b, int panel, int rows,
                  int cols, int m0, int n0, const Epilogue& ep) {
  if (a_signed)
    tile_upto<kMr>(RowsQuadsA<true>{a, lda, K, K / 4, b.k_padded / 4}, b, panel, rows, cols, m0, n0, ep);
  else
    tile_upto<kMr>(RowsQuadsA<false>{a, lda, K, K / 4, b.k_padded / 4}, b, panel, rows, cols, m0, n0, ep);
}

void tile_band(const uint8_t* band, const int32_t* quad_offset, ptrdiff_t step, const PackedPanels& b, int panel,
               int rows, int cols, int m0, int n0, const Epilogue& ep) {
  tile_upto<kMr>(BandQuadsA{band, quad_offset, step, b.k_padded / 4, b.k_padded / 4}, b, panel, rows, cols, m0, n0, ep);
}

// P panels against one row, over the row's nonzero quads only (see NonzeroSteps). With
// every step listed the step is the loop counter: one load less per step.
template <int P, bool EveryStep>
PYRT_AVX512 void gemv_panels(const NonzeroSteps& a, int N, const PackedPanels& b, int p, const Epilogue& ep) {
  __m512i acc[P][2];
#pragma GCC unroll 16
  for (int i = 0; i < P; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_si512();
  const uint8_t* bp = b.panel(p);
  for (int j = 0; j < a.count; ++j) {
    const __m512i av = _mm512_set1_epi32(int32_t(a.words[j]));
    const uint8_t* step = bp + ptrdiff_t(EveryStep ? j : a.steps[j]) * 128;
#pragma GCC unroll 16
    for (int i = 0; i < P; ++i) {
      const uint8_t* bs = step + i * b.panel_bytes;
      acc[i][0] = dpbusd(acc[i][0], av, load(bs));
      acc[i][1] = dpbusd(acc[i][1], av, load(bs + 64));
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < P; ++i) {
    const int n0 = (p + i) * kNr, cols = N - n0 < kNr ? N - n0 : kNr;
    Store16(ep, n0, cols)(acc[i][0], 0);
    if (cols > 16) Store16(ep, n0 + 16, cols - 16)(acc[i][1], 0);
  }
}

// The row's nonzero quads (NonzeroSteps), sixteen steps per compare. The compress goes
// through a register: vpcompressd to memory is microcoded and slow on Zen 4.
PYRT_AVX512 NonzeroSteps list_nonzero_quads(const uint8_t* a, bool a_signed, int K, int k_padded) {
  const int steps = k_padded / 4;
  const ListingRoom room = listing_room(steps);
  const __m512i flip = _mm512_set1_epi32(a_signed ? int32_t(0x80808080u) : 0);
  __m512i ids = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int kept = 0, s = 0;
  for (; s + 16 <= K / 4; s += 16) {
    const __m512i w = _mm512_xor_si512(load(a + 4 * s), flip);
    const __mmask16 nonzero = _mm512_test_epi32_mask(w, w);
    _mm512_storeu_si512(room.words + kept, _mm512_maskz_compress_epi32(nonzero, w));
    _mm512_storeu_si512(room.steps + kept, _mm512_maskz_compress_epi32(nonzero, ids));
    kept += __builtin_popcount(nonzero);
    ids = _mm512_add_epi32(ids, _mm512_set1_epi32(16));
  }
  return NonzeroSteps{room.words, room.steps, append_nonzero_quads(a, a_signed, K, s, steps, room, kept)};
}

template <bool EveryStep>
void gemv_groups(const NonzeroSteps& listed, int N, const PackedPanels& b, int p0, int p1, const Epilogue& ep) {
  int p = p0;
  for (; p + 4 <= p1; p += 4) gemv_panels<4, EveryStep>(listed, N, b, p, ep);
  for (; p < p1; ++p) gemv_panels<1, EveryStep>(listed, N, b, p, ep);
}

void gemv(const uint8_t* a, bool a_signed, int K, int N, const PackedPanels& b, int p0, int p1,
          const Epilogue& ep) {
  const NonzeroSteps listed = list_nonzero_quads(a, a_signed, K, b.k_padded);
  if (listed.count == b.k_padded / 4)
    gemv_groups<true>(listed, N, b, p0, p1, ep);
  else
    gemv_groups<false>(listed, N, b, p0, p1, ep);
}

// In place up to 8 panels (256 columns): on Zen 4 e.g. 196x1152x128 went from 58-75% of
// the peak packed to ~90% in place; at 1024 columns packing A is as good.
QgemmKernels kernels() {
  return QgemmKernels{kMr, kNr, pack_b, a_tile_bytes, pack_a, tile, gemv, tile_inplace, 8, tile_band, true};
}
