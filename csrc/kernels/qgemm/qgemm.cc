// The ISA-independent GEMM driver: operand shifting and zero-point folding, cache
// blocking, and the static (deterministic) split of work across threads.
#include "pyruntime/qgemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../../runtime/thread_pool.h"
#include "packing.h"
#include "pyruntime/errors.h"
#include "qgemm_kernels.h"
#include "requant.h"
#include "row_groups.h"

namespace pyrt {

void AlignedBuffer::Free::operator()(uint8_t* p) const { std::free(p); }

AlignedBuffer::AlignedBuffer(size_t bytes) : size_(bytes) {
  // Rounded up and never empty: kernels may load one full vector at the end.
  const size_t alloc = (bytes + 127) / 64 * 64;
  ptr_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, alloc)));
  if (!ptr_) throw std::bad_alloc();
}

PackedWeights::PackedWeights(const void* b, bool b_is_u8, int K, int N, ptrdiff_t ldb, const int32_t* b_zp,
                             int n_zp)
    : K_(K), N_(N), b_is_u8_(b_is_u8), shifted_(size_t(K) * N), zp_shifted_(N), col_sums_(N, 0) {
  if (K < 0 || N < 0) throw InputError("weights must have non-negative dimensions");
  if (n_zp != 1 && n_zp != N)
    throw InputError("b_zero_point must hold 1 or N=" + std::to_string(N) + " values, got " +
                     std::to_string(n_zp));
  const int shift = b_is_u8 ? 128 : 0;
  for (int n = 0; n < N; ++n) {
    zp_shifted_[n] = b_zp[n_zp == 1 ? 0 : n] - shift;
    has_zero_points_ |= zp_shifted_[n] != 0;
  }
  const uint8_t* src = static_cast<const uint8_t*>(b);
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) {
      const int8_t v = int8_t(src[k * ldb + n] ^ (b_is_u8 ? 0x80 : 0));
      shifted_[size_t(k) * N + n] = v;
      col_sums_[n] += v;
      max_abs_weight_ = std::max(max_abs_weight_, std::abs(int(v) - zp_shifted_[n]));
    }
}

const PackedPanels& PackedWeights::packed(Isa isa) const {
  std::lock_guard<std::mutex> lk(pack_mutex_);
  auto& slot = packs_[int(isa)];
  if (!slot) {
    auto p = std::make_unique<PackedPanels>();
    qgemm_kernels(isa).pack_b(shifted_.data(), K_, N_, *p);
    slot = std::move(p);
  }
  return *slot;
}

int64_t qgemm_worst_case(const PackedWeights& w, bool a_signed, int32_t a_zero_point, int64_t max_abs_bias) {
  const int64_t lo = a_signed ? -128 : 0, hi = a_signed ? 127 : 255;
  const int64_t a_dev = std::max(a_zero_point - lo, hi - a_zero_point);
  return int64_t(w.K()) * a_dev * w.max_abs_weight() + max_abs_bias;
}

namespace {

// Per-thread scratch that only grows: no allocation on the steady-state call path.
uint8_t* scratch(int slot, size_t bytes) {
  thread_local AlignedBuffer buffers[5];
  AlignedBuffer& b = buffers[slot];
  if (b.size() < bytes) b = AlignedBuffer(std::max(bytes, b.size() * 2));
  return b.data();
}
enum ScratchSlot { kEpilogueArrays = 0, kRowSums = 1, kPackedA = 2, kRowOf = 3, kGatheredRows = 4 };

constexpr int kRowsPerBlock = 96;            // rows of A packed per task (fits L2 with a B block)
constexpr size_t kBBlockBytes = 256 * 1024;  // panels of B walked together, L2-resident
constexpr int kMinPanelsPerThread = 2;
constexpr int64_t kMinMacsPerThread = 1 << 18;

}  // namespace

QgemmColumnTerms::Arrays QgemmColumnTerms::arrays_in(void* storage, int N) {
  auto* base = static_cast<int32_t*>(storage);
  const int n_pad = padded_columns(N);
  return Arrays{base, base + n_pad, reinterpret_cast<float*>(base + 2 * n_pad),
                reinterpret_cast<float*>(base + 3 * n_pad)};
}

void QgemmColumnTerms::fill(const PackedWeights& w, const QgemmArgs& args, const Arrays& out) {
  const int N = w.N(), K = w.K();
  int64_t max_bias = 0;
  if (args.bias)
    for (int n = 0; n < N; ++n) max_bias = std::max(max_bias, std::abs(int64_t(args.bias[n])));
  const int64_t worst = qgemm_worst_case(w, args.a_signed, args.a_zero_point, max_bias);
  if (worst > INT32_MAX)
    throw UnsupportedError("int8 GEMM with K=" + std::to_string(K) + " could reach |acc + bias| = " +
                           std::to_string(worst) +
                           " > 2^31-1 and wrap int32; split K or narrow the weights");
  const int32_t a_zp = args.a_zero_point + (args.a_signed ? 128 : 0);  // in the A' domain
  const int32_t* zp = w.zero_points();
  const int32_t* cs = w.column_sums();
  for (int n = 0; n < N; ++n) {
    // bias - a_zp * sum_k B'[k,n] + K * a_zp * b_zp[n], wrapping like the accumulator
    int32_t v = args.bias ? args.bias[n] : 0;
    v = wrap_add(v, -wrap_mul(a_zp, cs[n]));
    v = wrap_add(v, wrap_mul(wrap_mul(K, a_zp), zp[n]));
    out.col_corr[n] = v;
    out.b_zp[n] = zp[n];
    out.mult[n] = args.out == OutKind::i32 ? 1.0f : args.multiplier[args.n_multiplier == 1 ? 0 : n];
    out.add_col[n] = args.add_col ? args.add_col[n] : 0.0f;
  }
  // Padding, so kernels may load whole vectors past N.
  for (int n = N; n < padded_columns(N); ++n) {
    out.col_corr[n] = out.b_zp[n] = 0;
    out.mult[n] = out.add_col[n] = 0.0f;
  }
}

QgemmColumnTerms::QgemmColumnTerms(const PackedWeights& w, const QgemmArgs& args)
    : n_(w.N()), buf_(storage_bytes(w.N())) {
  fill(w, args, arrays());
}

Epilogue gemm_epilogue(const QgemmArgs& args, const QgemmColumnTerms::Arrays& terms, const int32_t* row_sums) {
  Epilogue ep;
  ep.out = args.out;
  ep.col_corr = terms.col_corr;
  ep.row_sums = row_sums;
  ep.b_zp = terms.b_zp;
  ep.mult = terms.mult;
  ep.lo_f = float(args.lo - args.out_zero_point);
  ep.hi_f = float(args.hi - args.out_zero_point);
  ep.out_zp = args.out_zero_point;
  ep.c = args.c;
  ep.ldc = args.ldc;
  if (args.add_col) {
    ep.add_col = terms.add_col;
    ep.add_mult = args.add_mult;
    ep.add_in_zp = args.add_in_zp;
    ep.add_out_zp = args.add_out_zp;
    ep.add_lo_f = float(args.add_lo - args.add_out_zp);
    ep.add_hi_f = float(args.add_hi - args.add_out_zp);
  }
  return ep;
}

void qgemm(const PackedWeights& w, const QgemmArgs& args, const QgemmColumnTerms* terms) {
  const int M = args.M, N = w.N(), K = w.K();
  if (args.add_col && args.out != OutKind::u8 && args.out != OutKind::s8)
    throw InputError("a fused Add needs a u8 or s8 GEMM output");
  if (M == 0 || N == 0) return;
  QgemmColumnTerms::Arrays terms_arrays;
  if (terms) {
    terms_arrays = terms->arrays();
  } else {
    terms_arrays = QgemmColumnTerms::arrays_in(scratch(kEpilogueArrays, QgemmColumnTerms::storage_bytes(N)), N);
    QgemmColumnTerms::fill(w, args, terms_arrays);
  }

  // More threads than usable CPUs would only queue behind each other, and a thread that
  // gets less than ~kMinMacsPerThread costs more to wake than it saves.
  const int64_t macs = int64_t(M) * N * K;
  const int max_par = int(std::max<int64_t>(1, std::min<int64_t>({args.threads, max_threads(),
                                                                  macs / kMinMacsPerThread})));
  const QgemmKernels& kern = qgemm_kernels(args.isa);
  const PackedPanels& pb = w.packed(args.isa);

  int32_t* row_sums = nullptr;
  if (w.has_zero_points()) {
    row_sums = reinterpret_cast<int32_t*>(scratch(kRowSums, size_t(M) * 4));
    const uint8_t flip = args.a_signed ? 0x80 : 0;
    const auto* a = static_cast<const uint8_t*>(args.a);
    for (int m = 0; m < M; ++m) {
      uint32_t s = 0;
      for (int k = 0; k < K; ++k) s += uint8_t(a[m * args.lda + k] ^ flip);
      row_sums[m] = int32_t(s);
    }
  }

  const Epilogue ep = gemm_epilogue(args, terms_arrays, row_sums);

  const int panels = (N + pb.nr - 1) / pb.nr;
  const auto* a = static_cast<const uint8_t*>(args.a);

  if (M == 1) {
    const int threads = std::max(1, std::min(max_par, panels / kMinPanelsPerThread));
    parallel_run(threads, [&](int tid) {
      const int p0 = int(int64_t(panels) * tid / threads), p1 = int(int64_t(panels) * (tid + 1) / threads);
      kern.gemv(a, args.a_signed, K, N, pb, p0, p1, ep);
    });
    return;
  }

  // Tasks: row blocks x column chunks. Enough column chunks that every thread has work
  // when there are few row blocks; each task packs its row block once.
  const int mr = kern.mr;
  // Row blocks are runs of whole tiles, at most kRowsPerBlock rows each. With several
  // threads their count rounds up to a multiple of the thread count and the tiles spread
  // evenly over them, so no thread gets one block more (1024 rows: 11 blocks of 96 would
  // cap two threads at 1.83x).
  const int tiles_m = (M + mr - 1) / mr;
  const int tiles_per_block_max = std::max(1, kRowsPerBlock / mr);
  int m_blocks = (tiles_m + tiles_per_block_max - 1) / tiles_per_block_max;
  if (max_par > 1 && m_blocks >= max_par) m_blocks = std::min(tiles_m, round_up(m_blocks, max_par));
  auto block_rows = [&](int mb, int& m_begin, int& m_end) {
    m_begin = int(int64_t(tiles_m) * mb / m_blocks) * mr;
    m_end = std::min(M, int(int64_t(tiles_m) * (mb + 1) / m_blocks) * mr);
  };
  const int rows_per_block = ((tiles_m + m_blocks - 1) / m_blocks) * mr;  // the largest block
  const int n_chunks = std::max(1, std::min(panels, (max_par + m_blocks - 1) / m_blocks));
  const int tasks = m_blocks * n_chunks;
  const int threads = std::max(1, std::min(max_par, tasks));
  const int panels_per_b_block = std::max<int>(1, int(kBBlockBytes / std::max<size_t>(pb.panel_bytes, 1)));
  const size_t tile_bytes = kern.a_tile_bytes(pb);

  // Few columns: each A row is used by only a few panels, so reading it in place beats
  // packing it (the kernel family says how few).
  const bool in_place = kern.tile_inplace != nullptr && pb.reads_a_in_place && panels <= kern.inplace_max_panels;
  parallel_run(threads, [&](int tid) {
    const int t0 = int(int64_t(tasks) * tid / threads), t1 = int(int64_t(tasks) * (tid + 1) / threads);
    if (in_place) {
      for (int t = t0; t < t1; ++t) {
        const int mb = t / n_chunks, nc = t % n_chunks;
        int m_begin, m_end;
        block_rows(mb, m_begin, m_end);
        const int p_begin = int(int64_t(panels) * nc / n_chunks), p_end = int(int64_t(panels) * (nc + 1) / n_chunks);
        for (int m0 = m_begin; m0 < m_end; m0 += mr)
          for (int p = p_begin; p < p_end; ++p)
            kern.tile_inplace(a + m0 * args.lda, args.lda, args.a_signed, K, pb, p, std::min(mr, m_end - m0),
                              std::min(pb.nr, N - p * pb.nr), m0, p * pb.nr, ep);
      }
      return;
    }
    uint8_t* a_packed = scratch(kPackedA, tile_bytes * (rows_per_block / mr));
    // Each task groups its own block's rows (the same grouping in every task of a block),
    // so the row map is per thread and indexed by absolute row.
    int32_t* row_of = kern.skips_zero_steps ? reinterpret_cast<int32_t*>(scratch(kRowOf, size_t(M) * 4)) : nullptr;
    Epilogue grouped_ep = ep;
    grouped_ep.row_of = row_of;
    for (int t = t0; t < t1; ++t) {
      const int mb = t / n_chunks, nc = t % n_chunks;
      int m_begin, m_end;
      block_rows(mb, m_begin, m_end);
      const int tiles = (m_end - m_begin + mr - 1) / mr;
      const bool grouped = row_of && group_rows_by_zero_steps(a + m_begin * args.lda, args.lda, args.a_signed,
                                                              m_end - m_begin, K, mr, args.isa == Isa::avx512vnni,
                                                              row_of + m_begin);
      uint8_t* gathered = grouped ? scratch(kGatheredRows, size_t(mr) * K + 16) : nullptr;
      for (int i = 0; i < tiles; ++i) {
        const int m0 = m_begin + i * mr, rows = std::min(mr, m_end - m0);
        if (!grouped) {
          kern.pack_a(a + m0 * args.lda, args.lda, args.a_signed, rows, K, pb, a_packed + i * tile_bytes);
          continue;
        }
        for (int r = 0; r < rows; ++r) {
          row_of[m0 + r] += m_begin;  // block-relative -> absolute
          std::memcpy(gathered + size_t(r) * K, a + ptrdiff_t(row_of[m0 + r]) * args.lda, size_t(K));
        }
        kern.pack_a(gathered, K, args.a_signed, rows, K, pb, a_packed + i * tile_bytes);
      }
      const Epilogue& block_ep = grouped ? grouped_ep : ep;
      const int p_begin = int(int64_t(panels) * nc / n_chunks), p_end = int(int64_t(panels) * (nc + 1) / n_chunks);
      for (int pb0 = p_begin; pb0 < p_end; pb0 += panels_per_b_block) {
        const int pb1 = std::min(p_end, pb0 + panels_per_b_block);
        for (int i = 0; i < tiles; ++i) {
          const int m0 = m_begin + i * mr, rows = std::min(mr, m_end - m0);
          for (int p = pb0; p < pb1; ++p) {
            const int n0 = p * pb.nr;
            kern.tile(a_packed + i * tile_bytes, pb, p, rows, std::min(pb.nr, N - n0), m0, n0, block_ep);
          }
        }
      }
    }
  });
}

}  // namespace pyrt
