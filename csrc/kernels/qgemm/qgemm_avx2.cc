// AVX2 path, exact on every input. vpmaddubsw adds two u8*s8 products into a saturating
// int16, which silently clips for large weights (the reason onnxruntime and FBGEMM answers
// differ between AVX2 and VNNI machines). So packing proves, pair by pair, that the sum
// cannot leave int16 for any u8 activation; only then the quad layout (maddubs + madd)
// runs. Otherwise both operands are widened to int16 pairs for vpmaddwd, which is exact;
// B stays one byte per weight in memory and is sign-extended on load.
#include <immintrin.h>

#include <cstring>

#include "../copy_bytes.h"
#include "epilogue_avx2.h"
#include "packing.h"
#include "qgemm_kernels.h"
#include "requant.h"

namespace pyrt {
namespace {

using avx2::load;
using avx2::store_row;

constexpr int kMr = 6;  // tile_rows names six rows of accumulators
constexpr int kNr = 16;
constexpr int kMaddQuads = 0;  // 4 k per int32 lane: vpmaddubsw + vpmaddwd(ones)
constexpr int kWidePairs = 1;  // 2 k per int32 lane, int16 operands: vpmovsxbw + vpmaddwd

// True when a0*b0 + a1*b1 stays inside int16 for all a in [0, 255] over every k pair.
bool maddubs_cannot_saturate(const int8_t* b, int K, int N) {
  for (int k = 0; k < K; k += 2)
    for (int n = 0; n < N; ++n) {
      const int b0 = b[size_t(k) * N + n];
      const int b1 = k + 1 < K ? b[size_t(k + 1) * N + n] : 0;
      const int pos = (b0 > 0 ? b0 : 0) + (b1 > 0 ? b1 : 0);
      const int neg = (b0 < 0 ? -b0 : 0) + (b1 < 0 ? -b1 : 0);
      if (255 * pos > 32767 || 255 * neg > 32768) return false;
    }
  return true;
}

void pack_b(const int8_t* b, int K, int N, PackedPanels& out) {
  if (maddubs_cannot_saturate(b, K, N)) {
    pack_b_quads(b, K, N, kNr, out);
    out.variant = kMaddQuads;
  } else {
    pack_b_pairs(b, K, N, kNr, out);
    out.variant = kWidePairs;
    // Pairs read in place would cost two byte loads and a merge per broadcast; one
    // vector widening pass (pack_a_rows16) makes every broadcast a single load.
    out.reads_a_in_place = false;
  }
}

size_t a_tile_bytes(const PackedPanels& b) {
  return size_t(b.k_padded) * kMr * (b.variant == kMaddQuads ? 1 : 2);  // A pairs are int16
}

// A' for the pair layout: each row widened to int16, row-major with stride k_padded, zero
// past K, so the kernel broadcasts a (k, k+1) pair straight from memory. The tail of a
// row (< 16 bytes) goes through a zeroed 16-byte buffer and is stored as a whole vector:
// the 32 bytes may run past k_padded into the next row's start, which is written after
// (rows go in order), or into the tile buffer's slack (AlignedBuffer keeps 64 bytes).
PYRT_AVX2 void pack_a_rows16(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, int k_padded,
                             uint8_t* tile) {
  const __m128i flip = _mm_set1_epi8(a_signed ? char(0x80) : 0);
  for (int r = 0; r < rows; ++r) {
    const uint8_t* src = a + r * lda;
    int16_t* dst = reinterpret_cast<int16_t*>(tile) + size_t(r) * k_padded;
    int k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m128i v = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k)), flip);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), _mm256_cvtepu8_epi16(v));
    }
    if (k < K) {
      alignas(16) uint8_t tail[16] = {};
      copy_bytes(tail, src + k, size_t(K - k));
      __m128i v = _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
      // Flip only the real bytes: the padding must stay zero.
      const __m128i real = _mm_cmpgt_epi8(_mm_set1_epi8(char(K - k)), _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
      v = _mm_xor_si128(v, _mm_and_si128(flip, real));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), _mm256_cvtepu8_epi16(v));
    } else if (k < k_padded) {
      dst[k] = 0;
    }
  }
}

void pack_a(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, const PackedPanels& b,
            uint8_t* tile) {
  if (b.variant == kMaddQuads)
    pack_a_quads(a, lda, a_signed, rows, K, b.k_padded, kMr, tile);
  else
    pack_a_rows16(a, lda, a_signed, rows, K, b.k_padded, tile);
}

// 16 columns x 2 k of B' as int16 pairs, in two registers.
PYRT_AVX2 inline void load_pairs(const uint8_t* p, __m256i& b0, __m256i& b1) {
  b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
}

PYRT_AVX2 inline int32_t load_u32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// acc + (a quad . b quad) per int32 lane, exact because packing proved no int16 saturation.
PYRT_AVX2 inline __m256i dot_quads(__m256i acc, __m256i a, __m256i b) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
}

PYRT_AVX2 inline __m256i dot_pairs(__m256i acc, __m256i a, __m256i b) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
}

// Where A comes from: a packed tile, or the rows themselves (for GEMMs with so few
// columns that packing A would cost more than it saves).
struct PackedQuadsA {  // [k/4][mr][4] u8
  const uint8_t* tile;
  PYRT_AVX2 int32_t operator()(int s, int r) const { return load_u32(tile + (s * kMr + r) * 4); }
};

struct PackedRows16A {  // rows of int16, stride k_padded
  const uint8_t* tile;
  int k_padded;
  PYRT_AVX2 int32_t operator()(int s, int r) const { return load_u32(tile + (size_t(r) * k_padded + 2 * s) * 2); }
};

PYRT_AVX2 inline int32_t a_quad_tail(const uint8_t* a, int K, int s, uint32_t flip);

struct RowsQuadsA {  // rows of A read in place
  const uint8_t* a;
  ptrdiff_t lda;
  int K, full;
  uint32_t flip;
  PYRT_AVX2 int32_t operator()(int s, int r) const {
    const uint8_t* row = a + r * lda;
    if (s >= full) return a_quad_tail(row, K, s, flip);
    return int32_t(uint32_t(load_u32(row + 4 * s)) ^ flip);
  }
};

// acc0 += a.b0 and acc1 += a.b1 for one row of the tile, in the packing's layout.
template <int Variant>
PYRT_AVX2 inline void row_step(__m256i& acc0, __m256i& acc1, int32_t a32, __m256i b0, __m256i b1) {
  const __m256i a = _mm256_set1_epi32(a32);
  if (Variant == kMaddQuads) {
    acc0 = dot_quads(acc0, a, b0);
    acc1 = dot_quads(acc1, a, b1);
  } else {
    acc0 = dot_pairs(acc0, a, b0);
    acc1 = dot_pairs(acc1, a, b1);
  }
}

// B' for step s of a panel: 16 columns as quads or as pairs widened to int16.
template <int Variant>
PYRT_AVX2 inline void load_step(const uint8_t* panel, int s, __m256i& b0, __m256i& b1) {
  if (Variant == kMaddQuads) {
    b0 = load(panel + s * 64);
    b1 = load(panel + s * 64 + 32);
  } else {
    load_pairs(panel + s * 32, b0, b1);
  }
}

// The accumulators are twelve named variables, not an array: GCC keeps an array of twelve
// __m256i on the stack (past its scalar-replacement size limit) and then loads and stores
// most of them on every k step, which cost half the throughput. Rows past R are dead code.
template <int R, int Variant, typename ASource>
PYRT_AVX2 void tile_rows(const ASource& a_src, const PackedPanels& b, int panel, int cols, int m0, int n0,
                         const Epilogue& ep) {
  const __m256i z = _mm256_setzero_si256();
  __m256i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z,
          c51 = z;
  const uint8_t* bp = b.panel(panel);
  const int steps = b.k_padded / (Variant == kMaddQuads ? 4 : 2);
  for (int s = 0; s < steps; ++s) {
    __m256i b0, b1;
    load_step<Variant>(bp, s, b0, b1);
    row_step<Variant>(c00, c01, a_src(s, 0), b0, b1);
    if constexpr (R > 1) row_step<Variant>(c10, c11, a_src(s, 1), b0, b1);
    if constexpr (R > 2) row_step<Variant>(c20, c21, a_src(s, 2), b0, b1);
    if constexpr (R > 3) row_step<Variant>(c30, c31, a_src(s, 3), b0, b1);
    if constexpr (R > 4) row_step<Variant>(c40, c41, a_src(s, 4), b0, b1);
    if constexpr (R > 5) row_step<Variant>(c50, c51, a_src(s, 5), b0, b1);
  }
  store_row(c00, c01, m0, n0, cols, ep);
  if constexpr (R > 1) store_row(c10, c11, m0 + 1, n0, cols, ep);
  if constexpr (R > 2) store_row(c20, c21, m0 + 2, n0, cols, ep);
  if constexpr (R > 3) store_row(c30, c31, m0 + 3, n0, cols, ep);
  if constexpr (R > 4) store_row(c40, c41, m0 + 4, n0, cols, ep);
  if constexpr (R > 5) store_row(c50, c51, m0 + 5, n0, cols, ep);
}

template <int Variant, typename ASource>
void tile_variant(const ASource& a_src, const PackedPanels& b, int panel, int rows, int cols, int m0, int n0,
                  const Epilogue& ep) {
  switch (rows) {
    case 1: return tile_rows<1, Variant>(a_src, b, panel, cols, m0, n0, ep);
    case 2: return tile_rows<2, Variant>(a_src, b, panel, cols, m0, n0, ep);
    case 3: return tile_rows<3, Variant>(a_src, b, panel, cols, m0, n0, ep);
    case 4: return tile_rows<4, Variant>(a_src, b, panel, cols, m0, n0, ep);
    case 5: return tile_rows<5, Variant>(a_src, b, panel, cols, m0, n0, ep);
    default: return tile_rows<6, Variant>(a_src, b, panel, cols, m0, n0, ep);
  }
}

void tile(const uint8_t* a_tile, const PackedPanels& b, int panel, int rows, int cols, int m0, int n0,
          const Epilogue& ep) {
  if (b.variant == kMaddQuads)
    tile_variant<kMaddQuads>(PackedQuadsA{a_tile}, b, panel, rows, cols, m0, n0, ep);
  else
    tile_variant<kWidePairs>(PackedRows16A{a_tile, b.k_padded}, b, panel, rows, cols, m0, n0, ep);
}

void tile_inplace(const uint8_t* a, ptrdiff_t lda, bool a_signed, int K, const PackedPanels& b, int panel, int rows,
                  int cols, int m0, int n0, const Epilogue& ep) {
  // Only the quad layout reads in place (pack_b clears reads_a_in_place for pairs).
  const uint32_t flip = a_signed ? 0x80808080u : 0u;
  tile_variant<kMaddQuads>(RowsQuadsA{a, lda, K, K / 4, flip}, b, panel, rows, cols, m0, n0, ep);
}

// The A broadcast for quad step s of a row read in place; bytes past K read as zero,
// which meets the zero padding of B.
PYRT_AVX2 inline int32_t a_quad_tail(const uint8_t* a, int K, int s, uint32_t flip) {
  const int k = s * 4;
  uint8_t q[4] = {0, 0, 0, 0};
  std::memcpy(q, a + k, size_t(K - k < 4 ? K - k : 4));
  for (int i = 0; i < 4 && k + i < K; ++i) q[i] ^= uint8_t(flip);
  return load_u32(q);
}

// One row of A against P panels, over its nonzero steps only (see NonzeroSteps; with
// every step listed the step is the loop counter). Named accumulators for the reason
// tile_rows gives.
template <int P, int Variant, bool EveryStep>
PYRT_AVX2 void gemv_panels(const NonzeroSteps& a, int N, const PackedPanels& b, int p, const Epilogue& ep) {
  const __m256i z = _mm256_setzero_si256();
  __m256i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
  const uint8_t* bp = b.panel(p);
  const size_t stride = b.panel_bytes;
  for (int j = 0; j < a.count; ++j) {
    const int32_t a32 = int32_t(a.words[j]);
    const int s = EveryStep ? j : a.steps[j];
    __m256i b0, b1;
    load_step<Variant>(bp, s, b0, b1);
    row_step<Variant>(c00, c01, a32, b0, b1);
    if constexpr (P > 1) {
      load_step<Variant>(bp + stride, s, b0, b1);
      row_step<Variant>(c10, c11, a32, b0, b1);
    }
    if constexpr (P > 2) {
      load_step<Variant>(bp + 2 * stride, s, b0, b1);
      row_step<Variant>(c20, c21, a32, b0, b1);
    }
    if constexpr (P > 3) {
      load_step<Variant>(bp + 3 * stride, s, b0, b1);
      row_step<Variant>(c30, c31, a32, b0, b1);
    }
  }
  auto store = [&](__m256i acc0, __m256i acc1, int i) PYRT_AVX2 {
    const int n0 = (p + i) * kNr;
    store_row(acc0, acc1, 0, n0, N - n0 < kNr ? N - n0 : kNr, ep);
  };
  store(c00, c01, 0);
  if constexpr (P > 1) store(c10, c11, 1);
  if constexpr (P > 2) store(c20, c21, 2);
  if constexpr (P > 3) store(c30, c31, 3);
}

template <int Variant, bool EveryStep>
void gemv_groups(const NonzeroSteps& a, int N, const PackedPanels& b, int p0, int p1, const Epilogue& ep) {
  int p = p0;
  for (; p + 4 <= p1; p += 4) gemv_panels<4, Variant, EveryStep>(a, N, b, p, ep);
  for (; p < p1; ++p) gemv_panels<1, Variant, EveryStep>(a, N, b, p, ep);
}

template <int Variant>
void gemv_variant(const NonzeroSteps& a, int steps, int N, const PackedPanels& b, int p0, int p1,
                  const Epilogue& ep) {
  if (a.count == steps)
    gemv_groups<Variant, true>(a, N, b, p0, p1, ep);
  else
    gemv_groups<Variant, false>(a, N, b, p0, p1, ep);
}

void gemv(const uint8_t* a, bool a_signed, int K, int N, const PackedPanels& b, int p0, int p1,
          const Epilogue& ep) {
  if (b.variant == kMaddQuads) {
    gemv_variant<kMaddQuads>(nonzero_quads(a, a_signed, K, b.k_padded), b.k_padded / 4, N, b, p0, p1, ep);
    return;
  }
  // The pair layout widens the row once, as pack_a does for a tile, so that every step's
  // word is one (k, k+1) int16 pair.
  thread_local AlignedBuffer widened;
  const size_t bytes = a_tile_bytes(b) / kMr;
  if (widened.size() < bytes) widened = AlignedBuffer(bytes);
  pack_a_rows16(a, 0, a_signed, 1, K, b.k_padded, widened.data());
  const auto* pairs = reinterpret_cast<const uint32_t*>(widened.data());
  gemv_variant<kWidePairs>(nonzero_words(pairs, b.k_padded / 2), b.k_padded / 2, N, b, p0, p1, ep);
}

}  // namespace

QgemmKernels qgemm_kernels_avx2() { return QgemmKernels{kMr, kNr, pack_b, a_tile_bytes, pack_a, tile, gemv, tile_inplace, 2}; }

}  // namespace pyrt
