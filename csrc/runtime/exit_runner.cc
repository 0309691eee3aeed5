#include "exit_runner.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "pyruntime/errors.h"

namespace pyrt {

namespace {

template <typename T>
bool fires_typed(ExitRule rule, const T* row, int64_t classes, double threshold) {
  if (classes == 0) return false;
  // Float scores compare in float32 (numpy compares a float32 array with a Python float
  // that way); integer scores compare exactly, in double.
  using Acc = typename std::conditional<std::is_same<T, float>::value, float, double>::type;
  const Acc t = Acc(threshold);
  Acc top1 = -std::numeric_limits<Acc>::infinity(), top2 = top1;
  for (int64_t c = 0; c < classes; ++c) {
    const Acc v = Acc(row[c]);
    if (v != v) return false;
    if (v > top1) {
      top2 = top1;
      top1 = v;
    } else if (v > top2) {
      top2 = v;
    }
  }
  if (rule == ExitRule::max) return top1 >= t;
  if (classes < 2) return threshold <= 0;
  return Acc(top1 - top2) >= t;
}

}  // namespace

bool exit_rule_fires(ExitRule rule, const void* row, DType dtype, int64_t classes, double threshold) {
  switch (dtype) {
    case DType::f32: return fires_typed(rule, static_cast<const float*>(row), classes, threshold);
    case DType::u8: return fires_typed(rule, static_cast<const uint8_t*>(row), classes, threshold);
    case DType::s8: return fires_typed(rule, static_cast<const int8_t*>(row), classes, threshold);
    case DType::s32: return fires_typed(rule, static_cast<const int32_t*>(row), classes, threshold);
    case DType::s64: return fires_typed(rule, static_cast<const int64_t*>(row), classes, threshold);
    case DType::boolean: return fires_typed(rule, static_cast<const uint8_t*>(row), classes, threshold);
  }
  return false;
}

ExitRunner::ExitRunner(std::vector<ExitSegment> segments, std::vector<int64_t> slot_row_bytes,
                       std::vector<int> slot_last_use, int64_t classes, DType score_dtype)
    : segments_(std::move(segments)),
      slot_row_bytes_(std::move(slot_row_bytes)),
      slot_last_use_(std::move(slot_last_use)),
      classes_(classes),
      score_dtype_(score_dtype) {
  if (segments_.empty() || segments_.back().rule != ExitRule::none)
    throw InputError("an exit plan needs segments, the last one without a gate");
  if (slot_last_use_.size() != slot_row_bytes_.size()) throw InputError("slot tables differ in length");
  for (const ExitSegment& s : segments_) {
    for (int slot : s.in_slots)
      if (slot < 0 || size_t(slot) >= slot_row_bytes_.size()) throw InputError("exit plan reads an unknown slot");
    for (int slot : s.out_slots)
      if (slot <= 0 || size_t(slot) >= slot_row_bytes_.size()) throw InputError("exit plan writes an unknown slot");
  }
}

int ExitRunner::max_bucket() const {
  int m = std::numeric_limits<int>::max();
  for (const ExitSegment& s : segments_) m = std::min(m, int(s.by_bucket.size()) - 1);
  return m;
}

void ExitRunner::run(const void* x, int64_t n, const std::vector<double>& thresholds, void* out,
                     int64_t* exit_index, int threads, Isa isa) const {
  const int gates = int(segments_.size()) - 1;
  if (int(thresholds.size()) != gates) throw InputError("expected one threshold per gate");
  if (n <= 0) return;
  if (n >= (int64_t(1) << (max_bucket() + 1)))
    throw InputError("exit plan has no plans for a batch of " + std::to_string(n) + " rows");
  const size_t score_row = size_t(classes_) * dtype_size(score_dtype_);
  const size_t slots = slot_row_bytes_.size();

  // Per-thread buffers that only grow: one per slot, the current segment's scores, and the
  // original index of each live row. Slot 0 is read from x in place until the first
  // compaction gathers it into its buffer.
  thread_local std::vector<std::vector<uint8_t>> slot_buf;
  thread_local std::vector<uint8_t*> slot_ptr;
  thread_local std::vector<uint8_t> scores;
  thread_local std::vector<int64_t> rows, keep;
  if (slot_buf.size() < slots) slot_buf.resize(slots);
  slot_ptr.assign(slots, nullptr);
  for (size_t s = 0; s < slots; ++s) {
    const size_t need = size_t(n) * size_t(slot_row_bytes_[s]);
    if (slot_buf[s].size() < need) slot_buf[s].resize(need);
    slot_ptr[s] = slot_buf[s].data();
  }
  slot_ptr[0] = const_cast<uint8_t*>(static_cast<const uint8_t*>(x));  // never written while it is x
  if (scores.size() < size_t(n) * score_row) scores.resize(size_t(n) * score_row);
  rows.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) rows[i] = i;

  thread_local std::vector<const void*> ins;
  thread_local std::vector<void*> outs;
  int64_t live = n;
  for (int k = 0; k <= gates; ++k) {
    const ExitSegment& seg = segments_[k];
    // The live rows run as power-of-two chunks, largest first.
    int64_t offset = 0;
    for (int b = 62; b >= 0; --b) {
      const int64_t chunk = int64_t(1) << b;
      if (!(live & chunk)) continue;
      const Program& prog = *seg.by_bucket[b];
      ins.clear();
      outs.clear();
      for (int slot : seg.in_slots) ins.push_back(slot_ptr[slot] + offset * slot_row_bytes_[slot]);
      outs.push_back(scores.data() + offset * score_row);
      for (int slot : seg.out_slots) outs.push_back(slot_ptr[slot] + offset * slot_row_bytes_[slot]);
      prog.run(ins, outs, threads, isa);
      offset += chunk;
    }
    auto* out_bytes = static_cast<uint8_t*>(out);
    if (k == gates) {
      for (int64_t i = 0; i < live; ++i) {
        std::memcpy(out_bytes + rows[i] * score_row, scores.data() + i * score_row, score_row);
        exit_index[rows[i]] = gates;
      }
      return;
    }
    // Gate k: answered rows leave; the rest move to the front of every slot still read.
    int64_t kept = 0;
    keep.clear();
    for (int64_t i = 0; i < live; ++i) {
      const uint8_t* row = scores.data() + i * score_row;
      if (exit_rule_fires(seg.rule, row, score_dtype_, classes_, thresholds[k])) {
        std::memcpy(out_bytes + rows[i] * score_row, row, score_row);
        exit_index[rows[i]] = k;
      } else {
        keep.push_back(i);
        rows[kept++] = rows[i];
      }
    }
    if (kept == 0) return;
    if (kept == live) continue;
    for (size_t s = 0; s < slots; ++s) {
      if (slot_last_use_[s] <= k) continue;
      // Rows move to the front of the slot's own buffer. keep[] rises and keep[j] >= j,
      // so in place no row is overwritten before it is read; from x it is a gather.
      const size_t rb = size_t(slot_row_bytes_[s]);
      uint8_t* dst = slot_buf[s].data();
      for (int64_t j = 0; j < kept; ++j)
        if (dst + j * rb != slot_ptr[s] + keep[j] * rb) std::memmove(dst + j * rb, slot_ptr[s] + keep[j] * rb, rb);
      slot_ptr[s] = dst;
    }
    live = kept;
  }
}

}  // namespace pyrt
