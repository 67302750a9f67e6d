// CUDA implementation of the MCKP solvers (see mckp_cuda.h for the contract, mckp.h for the
// vocabulary and mckp_hulls.cpp / mckp_exact.cpp for the CPU twin these kernels reproduce).
//
// Exact solve, frontier and RCT share one pipeline:
//   1. hull_kernel: one thread per individual validates its row (first bad entry -> atomicMin of the
//      row-major cell index), builds the upper concave hull exactly like build_hull on the CPU and
//      stores (hull indices, length, number of steps);
//   2. an inclusive scan of the step counts gives each individual's slot in the step list; the
//      total P and the error record come back to the host (one sync);
//   3. write_steps_kernel writes (bp, id = i*m + s) for every hull step in (individual, step) order;
//      a stable CUB radix sort by bp DESCENDING keeps ids ascending among equal bp: that is the
//      global order of mckp.h;
//   4. per sorted step its cost (or value, or IPW delta) in float64, a deterministic inclusive scan
//      from the base policy, and a prefix max of it (exact, no rounding), so that "the first step
//      whose cumulative spend exceeds the budget" is a binary search per budget;
//   5. cut_kernel turns that position into a Cut (lam, individual, step), apply kernels write the
//      choices with steps_taken's rule, and fixed-tree reductions give spend, value and the dual.
// Bisection evaluates argmax_j (r - lam c) in one kernel per multiplier; the loop runs on the host.
//
// Floating point: every breakpoint is (r[b] - r[a]) / (c[b] - c[a]) with explicitly rounded
// intrinsics (no contraction into FMA, IEEE division), so it is bit-identical to the CPU. Every
// product that is then added uses __dmul_rn/__fmul_rn for the same reason. Sums of float64 use
// fixed trees (block size, items per thread and grid size depend only on the problem size), so the
// results are deterministic run to run.
//
// Deliberate repetition: the device functions for the hull (build_hull, the monotone chain),
// steps_taken and the per-row policy mirror the CPU's (mckp_internal.h, mckp_hulls.cpp) line by
// line, so that hulls, breakpoints, cuts and choices are bit-identical on both devices. A change to
// one must be made to the other (tests/test_solver_cuda.py compares them).
#include <cuda_runtime.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>
#include <cuda/std/limits>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "bidfcl/core/cuda_check.h"  // cuda_check, BIDFCL_CUDA_CHECK, BIDFCL_LAUNCH_CHECK
#include "bidfcl/core/mckp.h"
#include "bidfcl/core/mckp_cuda.h"
#include "bidfcl/core/status_record.h"

namespace bidfcl::core {
namespace {

constexpr int kBlock = 256;                           // threads per block everywhere
constexpr int kItems = 8;                             // consecutive elements per thread in scans
constexpr int64_t kTile = int64_t(kBlock) * kItems;   // elements per scan tile
constexpr int64_t kMaxReduceBlocks = 1024;            // fixed grid of the reductions
constexpr int64_t kMaxGridBlocks = int64_t(1) << 20;  // grid-stride loops beyond this
constexpr unsigned long long kNone = ~0ull;           // "no error" / "no index" in atomicMin records

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a one-thread-per-element grid-stride kernel over n elements.
unsigned grid_blocks(int64_t n) {
  int64_t b = ceil_div(n, kBlock);
  if (b < 1) b = 1;
  if (b > kMaxGridBlocks) b = kMaxGridBlocks;
  return static_cast<unsigned>(b);
}

// Blocks of a reduction over n elements: depends only on n, so the reduction tree is fixed.
int reduce_blocks(int64_t n) {
  int64_t b = ceil_div(n, kBlock);
  if (b < 1) b = 1;
  if (b > kMaxReduceBlocks) b = kMaxReduceBlocks;
  return static_cast<int>(b);
}

template <typename V>
V copy_to_host(const V* dev, cudaStream_t stream) {
  V host{};
  BIDFCL_CUDA_CHECK(cudaMemcpyAsync(&host, dev, sizeof(V), cudaMemcpyDeviceToHost, stream));
  BIDFCL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// ---- explicitly rounded arithmetic (no FMA contraction, IEEE division) ---------------------------

__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename T>
__device__ __forceinline__ T slope_dev(const T* r, const T* c, int a, int b) {
  return div_rn(sub_rn(r[b], r[a]), sub_rn(c[b], c[a]));
}

template <typename T>
__device__ __forceinline__ T pos_inf() {
  return ::cuda::std::numeric_limits<T>::infinity();
}

// ---- deterministic block-level building blocks ---------------------------------------------------

template <typename V>
struct SumOp {
  __host__ __device__ V operator()(const V& a, const V& b) const { return a + b; }
  __host__ __device__ static V identity() { return V(0); }
};

template <typename V>
struct MaxOp {
  __host__ __device__ V operator()(const V& a, const V& b) const { return a < b ? b : a; }
  __host__ __device__ static V identity() { return -::cuda::std::numeric_limits<V>::infinity(); }
};

struct Sum3 {
  double a, b, c;  // (spend, value, lagrangian) or similar triples
};

// Device addresses of a device-resident Sum3's fields (no host dereference).
inline const double* first_of(const Sum3* s) { return reinterpret_cast<const double*>(s); }
inline const double* second_of(const Sum3* s) { return reinterpret_cast<const double*>(s) + 1; }
static_assert(sizeof(Sum3) == 3 * sizeof(double), "Sum3 must be three packed doubles");

struct Sum3Op {
  __host__ __device__ Sum3 operator()(const Sum3& x, const Sum3& y) const { return {x.a + y.a, x.b + y.b, x.c + y.c}; }
  __host__ __device__ static Sum3 identity() { return {0.0, 0.0, 0.0}; }
};

// ---- scans: tiles of kTile elements; each thread scans kItems consecutive elements ----------------

// tile_sums[t] = op-reduction of tile t.
template <typename V, typename Op>
__global__ void tile_reduce_kernel(const V* in, int64_t n, V* tile_sums) {
  using BlockReduce = cub::BlockReduce<V, kBlock>;
  __shared__ typename BlockReduce::TempStorage tmp;
  const Op op;
  const int64_t first = int64_t(blockIdx.x) * kTile + int64_t(threadIdx.x) * kItems;
  V acc = Op::identity();
  for (int j = 0; j < kItems; ++j) {
    const int64_t q = first + j;
    if (q < n) acc = op(acc, in[q]);
  }
  const V total = BlockReduce(tmp).Reduce(acc, op);
  if (threadIdx.x == 0) tile_sums[blockIdx.x] = total;
}

// In place: sums[t] <- init (op) sums[0] (op) ... (op) sums[t-1]. One block walks the tiles in order.
template <typename V, typename Op>
__global__ void scan_tile_sums_kernel(V* sums, int64_t num_tiles, const V* init) {
  using BlockScan = cub::BlockScan<V, kBlock>;
  __shared__ typename BlockScan::TempStorage tmp;
  const Op op;
  V carry = init ? *init : Op::identity();
  for (int64_t start = 0; start < num_tiles; start += kTile) {
    const int64_t first = start + int64_t(threadIdx.x) * kItems;
    V local[kItems];
    V mine = Op::identity();
    for (int j = 0; j < kItems; ++j) {
      const int64_t q = first + j;
      local[j] = q < num_tiles ? sums[q] : Op::identity();
      mine = op(mine, local[j]);
    }
    V before, aggregate;
    BlockScan(tmp).ExclusiveScan(mine, before, Op::identity(), op, aggregate);
    V run = op(carry, before);
    for (int j = 0; j < kItems; ++j) {
      const int64_t q = first + j;
      if (q < num_tiles) sums[q] = run;
      run = op(run, local[j]);
    }
    carry = op(carry, aggregate);
    __syncthreads();  // tmp is reused by the next round
  }
}

// out[q] = tile_prefix[tile of q] (op) in[tile start] (op) ... (op) in[q]. in == out is allowed: each
// thread reads its own elements before the block scan and writes them after.
template <typename V, typename Op>
__global__ void tile_scan_kernel(const V* in, V* out, int64_t n, const V* tile_prefix) {
  using BlockScan = cub::BlockScan<V, kBlock>;
  __shared__ typename BlockScan::TempStorage tmp;
  const Op op;
  const int64_t first = int64_t(blockIdx.x) * kTile + int64_t(threadIdx.x) * kItems;
  V local[kItems];
  V mine = Op::identity();
  for (int j = 0; j < kItems; ++j) {
    const int64_t q = first + j;
    local[j] = q < n ? in[q] : Op::identity();
    mine = op(mine, local[j]);
  }
  V before;
  BlockScan(tmp).ExclusiveScan(mine, before, Op::identity(), op);
  V run = op(tile_prefix[blockIdx.x], before);
  for (int j = 0; j < kItems; ++j) {
    const int64_t q = first + j;
    run = op(run, local[j]);
    if (q < n) out[q] = run;
  }
}

// Deterministic inclusive scan: out[q] = init (op) in[0] (op) ... (op) in[q]; init_dev may be null
// (the identity). The association depends only on n.
template <typename V, typename Op>
void inclusive_scan(const V* in, V* out, int64_t n, const V* init_dev, DeviceWorkspace& ws, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t tiles = ceil_div(n, kTile);
  V* sums = workspace_array<V>(ws, tiles);
  tile_reduce_kernel<V, Op><<<static_cast<unsigned>(tiles), kBlock, 0, stream>>>(in, n, sums);
  BIDFCL_LAUNCH_CHECK("tile_reduce_kernel");
  scan_tile_sums_kernel<V, Op><<<1, kBlock, 0, stream>>>(sums, tiles, init_dev);
  BIDFCL_LAUNCH_CHECK("scan_tile_sums_kernel");
  tile_scan_kernel<V, Op><<<static_cast<unsigned>(tiles), kBlock, 0, stream>>>(in, out, n, sums);
  BIDFCL_LAUNCH_CHECK("tile_scan_kernel");
}

// ---- reductions over individuals: per-block partials, then one block in a fixed order -------------

// partials[block] = Op-reduction of f(i) over the grid-stride items of the block.
template <typename V, typename Op, typename F>
__global__ void reduce_partials_kernel(F f, int64_t n, V* partials) {
  using BlockReduce = cub::BlockReduce<V, kBlock>;
  __shared__ typename BlockReduce::TempStorage tmp;
  const Op op;
  V acc = Op::identity();
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < n; i += stride) acc = op(acc, f(i));
  const V total = BlockReduce(tmp).Reduce(acc, op);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <typename V, typename Op>
__global__ void reduce_final_kernel(const V* partials, int num_partials, V* out) {
  using BlockReduce = cub::BlockReduce<V, kBlock>;
  __shared__ typename BlockReduce::TempStorage tmp;
  const Op op;
  V acc = Op::identity();
  for (int t = threadIdx.x; t < num_partials; t += kBlock) acc = op(acc, partials[t]);
  const V total = BlockReduce(tmp).Reduce(acc, op);
  if (threadIdx.x == 0) *out = total;
}

// *out = Op-reduction of f(i), i in [0, n). `partials` holds reduce_blocks(n) entries.
template <typename V, typename Op, typename F>
void reduce(const F& f, int64_t n, V* partials, V* out, cudaStream_t stream) {
  const int blocks = reduce_blocks(n);
  reduce_partials_kernel<V, Op, F><<<blocks, kBlock, 0, stream>>>(f, n, partials);
  BIDFCL_LAUNCH_CHECK("reduce_partials_kernel");
  reduce_final_kernel<V, Op><<<1, kBlock, 0, stream>>>(partials, blocks, out);
  BIDFCL_LAUNCH_CHECK("reduce_final_kernel");
}

// ---- validation records --------------------------------------------------------------------------

struct ErrorRecord {
  unsigned long long cell;  // smallest row-major index i*m + j of a bad values/costs entry
  unsigned long long row;   // smallest row with a bad treatment / propensity / cost_obs
};

__device__ __forceinline__ void record_min(unsigned long long* slot, unsigned long long v) {
  if (v < *reinterpret_cast<volatile unsigned long long*>(slot)) atomicMin(slot, v);
}

// Same rule as check_row on the CPU: the first j whose value or cost is non-finite or whose cost is
// negative. Returns true if the row is clean.
template <typename T>
__device__ bool check_row_dev(const T* r, const T* c, int64_t i, int m, ErrorRecord* err) {
  for (int j = 0; j < m; ++j) {
    const T rv = r[j], cv = c[j];
    if (!isfinite(rv) || !isfinite(cv) || cv < T(0)) {
      record_min(&err->cell, static_cast<unsigned long long>(i * m + j));
      return false;
    }
  }
  return true;
}

// Turns the error record into the CPU's Status (reads the offending entry back).
template <typename T>
Status cell_status(const T* values, const T* costs, int64_t m, unsigned long long cell, cudaStream_t stream) {
  if (cell == kNone) return Status::Ok();
  const int64_t flat = static_cast<int64_t>(cell);
  const T r = copy_to_host(values + flat, stream);
  const T c = copy_to_host(costs + flat, stream);
  const int64_t i = flat / m, j = flat % m;
  if (!std::isfinite(r)) return {Code::kNonFiniteValue, i, j, double(r)};
  if (!std::isfinite(c)) return {Code::kNonFiniteCost, i, j, double(c)};
  return {Code::kNegativeCost, i, j, double(c)};
}

// ---- hulls -------------------------------------------------------------------------------------

// Exactly build_hull of mckp_internal.h: sort by (cost asc, value desc, index asc), keep points that
// strictly raise the best value so far, monotone chain popping only on a strictly convex turn.
template <typename T>
__device__ int build_hull_dev(const T* r, const T* c, int m, uint8_t* out) {
  uint8_t order[kMaxOptions];
  for (int j = 0; j < m; ++j) order[j] = static_cast<uint8_t>(j);
  for (int x = 1; x < m; ++x) {
    const uint8_t v = order[x];
    const T cv = c[v], rv = r[v];
    int y = x - 1;
    while (y >= 0) {
      const int o = order[y];
      const bool before = cv != c[o] ? cv < c[o] : (rv != r[o] ? rv > r[o] : v < o);
      if (!before) break;
      order[y + 1] = order[y];
      --y;
    }
    order[y + 1] = v;
  }
  int len = 0;
  for (int x = 0; x < m; ++x) {
    const int j = order[x];
    if (len > 0 && !(r[j] > r[out[len - 1]])) continue;
    while (len >= 2 && slope_dev(r, c, out[len - 2], out[len - 1]) < slope_dev(r, c, out[len - 1], j)) --len;
    out[len++] = static_cast<uint8_t>(j);
  }
  return len;
}

template <typename T>
__global__ void hull_kernel(const T* values, const T* costs, int64_t n, int m, uint8_t* hull, uint16_t* len,
                            int64_t* steps, ErrorRecord* err) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < n; i += stride) {
    const T* r = values + i * m;
    const T* c = costs + i * m;
    check_row_dev(r, c, i, m, err);  // a bad row still gets some hull; the host stops before using it
    const int l = build_hull_dev(r, c, m, hull + i * m);
    len[i] = static_cast<uint16_t>(l);
    steps[i] = l - 1;
  }
}

template <typename T>
__global__ void validate_kernel(const T* values, const T* costs, int64_t n, int m, ErrorRecord* err) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < n; i += stride)
    check_row_dev(values + i * m, costs + i * m, i, m, err);
}

// Writes (bp, id) of every hull step; slot_end[i] is the inclusive scan of the step counts.
template <typename T>
__global__ void write_steps_kernel(const T* values, const T* costs, int64_t n, int m, const uint8_t* hull,
                                   const uint16_t* len, const int64_t* slot_end, T* bp, int64_t* id) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < n; i += stride) {
    const int l = len[i];
    if (l < 2) continue;
    const T* r = values + i * m;
    const T* c = costs + i * m;
    const uint8_t* h = hull + i * m;
    const int64_t first = slot_end[i] - (l - 1);
    for (int s = 1; s < l; ++s) {
      bp[first + s - 1] = slope_dev(r, c, h[s - 1], h[s]);
      id[first + s - 1] = i * m + s;
    }
  }
}

// The check = false layout: slot i * (m - 1) + s - 1 holds step s of individual i, or, for
// s >= len[i], a padding entry with key -inf (below every breakpoint, which is > 0 or +inf for valid
// input) and an id whose step is >= len[i], so the stable descending sort puts the P real steps
// first, in the same order as write_steps_kernel's compact layout. A NaN breakpoint (only from bad
// input, which the caller's lazy check reports) is stored as 0 so that it cannot sort below the
// padding. Cost: the sort and the scans run over n * (m - 1) entries instead of P.
template <typename T>
__global__ void write_padded_steps_kernel(const T* values, const T* costs, int64_t n, int m, const uint8_t* hull,
                                          const uint16_t* len, T* bp, int64_t* id) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < n; i += stride) {
    const int l = len[i];
    const T* r = values + i * m;
    const T* c = costs + i * m;
    const uint8_t* h = hull + i * m;
    const int64_t first = i * (m - 1);
    for (int s = 1; s < m; ++s) {
      T key = -pos_inf<T>();
      if (s < l) {
        key = slope_dev(r, c, h[s - 1], h[s]);
        if (isnan(key)) key = T(0);
      }
      bp[first + s - 1] = key;
      id[first + s - 1] = i * m + s;
    }
  }
}

// Cheapest policy (hull point 0): (spend, value, unused).
template <typename T>
struct BaseTotals {
  const T* values;
  const T* costs;
  const uint8_t* hull;
  int64_t m;
  __device__ Sum3 operator()(int64_t i) const {
    const int64_t j = i * m + hull[i * m];
    return {double(costs[j]), double(values[j]), 0.0};
  }
};

// Everything the exact pipeline keeps on the device.
template <typename T>
struct StepOrder {
  int64_t n = 0, m = 0, P = 0;
  uint8_t* hull = nullptr;   // [n, m]
  uint16_t* len = nullptr;   // [n]
  T* bp = nullptr;           // [P] sorted, descending
  int64_t* id = nullptr;     // [P] i * m + s, in the global order
  Sum3* base = nullptr;      // device: (spend, value) of the cheapest policy
  ErrorRecord* err = nullptr;
  // Without host reads (check = false) P is not known on the host: the steps are sorted in a
  // worst-case buffer of n * (m - 1) entries (missing steps padded at the end, see
  // write_padded_steps_kernel), `sorted` is that length and P_dev points at the step count on the
  // device. With the host reads, sorted = P and P_dev = nullptr.
  int64_t sorted = 0;
  const int64_t* P_dev = nullptr;
};

// Phase 1 (hulls, validation, counts). Returns the Status of values/costs; fills P.
template <typename T>
Status build_hulls_cuda(const MckpInput<T>& in, StepOrder<T>& so, int64_t*& slot_end, DeviceWorkspace& ws,
                        cudaStream_t stream, bool check) {
  const int64_t n = in.n, m = in.m;
  so.n = n;
  so.m = m;
  so.hull = workspace_array<uint8_t>(ws, n * m);
  so.len = workspace_array<uint16_t>(ws, n);
  slot_end = workspace_array<int64_t>(ws, n);
  so.err = workspace_array<ErrorRecord>(ws, 1);
  BIDFCL_CUDA_CHECK(cudaMemsetAsync(so.err, 0xFF, sizeof(ErrorRecord), stream));
  hull_kernel<T><<<grid_blocks(n), kBlock, 0, stream>>>(in.values, in.costs, n, static_cast<int>(m), so.hull, so.len,
                                                        slot_end, so.err);
  BIDFCL_LAUNCH_CHECK("hull_kernel");
  inclusive_scan<int64_t, SumOp<int64_t>>(slot_end, slot_end, n, nullptr, ws, stream);
  if (!check) {  // no host read: P stays on the device; sizes from the shape only
    so.P = -1;
    so.P_dev = slot_end + (n - 1);
    so.sorted = n * (m - 1);
    return Status::Ok();
  }
  so.P = copy_to_host(slot_end + (n - 1), stream);
  so.sorted = so.P;
  const ErrorRecord host_err = copy_to_host(so.err, stream);
  return cell_status(in.values, in.costs, m, host_err.cell, stream);
}

// Phase 2: the steps in the global order and the base policy totals.
template <typename T>
void sort_steps_cuda(const MckpInput<T>& in, StepOrder<T>& so, const int64_t* slot_end, DeviceWorkspace& ws,
                     cudaStream_t stream) {
  const int64_t n = in.n, m = in.m, P = so.sorted;
  so.base = workspace_array<Sum3>(ws, 1);
  Sum3* partials = workspace_array<Sum3>(ws, reduce_blocks(n));
  reduce<Sum3, Sum3Op>(BaseTotals<T>{in.values, in.costs, so.hull, m}, n, partials, so.base, stream);
  if (P == 0) {
    so.bp = workspace_array<T>(ws, 1);
    so.id = workspace_array<int64_t>(ws, 1);
    return;
  }
  T* keys[2] = {workspace_array<T>(ws, P), workspace_array<T>(ws, P)};
  int64_t* ids[2] = {workspace_array<int64_t>(ws, P), workspace_array<int64_t>(ws, P)};
  if (so.P_dev) {
    write_padded_steps_kernel<T><<<grid_blocks(n), kBlock, 0, stream>>>(in.values, in.costs, n, static_cast<int>(m),
                                                                        so.hull, so.len, keys[0], ids[0]);
    BIDFCL_LAUNCH_CHECK("write_padded_steps_kernel");
  } else {
    write_steps_kernel<T><<<grid_blocks(n), kBlock, 0, stream>>>(in.values, in.costs, n, static_cast<int>(m), so.hull,
                                                                 so.len, slot_end, keys[0], ids[0]);
    BIDFCL_LAUNCH_CHECK("write_steps_kernel");
  }
  cub::DoubleBuffer<T> dkeys(keys[0], keys[1]);
  cub::DoubleBuffer<int64_t> dids(ids[0], ids[1]);
  size_t temp_bytes = 0;
  BIDFCL_CUDA_CHECK(
      cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, dkeys, dids, P, 0, int(sizeof(T) * 8), stream));
  void* temp = ws.allocate(temp_bytes > 0 ? temp_bytes : 1);
  BIDFCL_CUDA_CHECK(
      cub::DeviceRadixSort::SortPairsDescending(temp, temp_bytes, dkeys, dids, P, 0, int(sizeof(T) * 8), stream));
  so.bp = dkeys.Current();
  so.id = dids.Current();
}

// ---- per sorted step quantities ------------------------------------------------------------------

template <typename T>
__global__ void step_deltas_kernel(const T* values, const T* costs, int64_t m, const uint8_t* hull, const int64_t* id,
                                   int64_t P, const int64_t* P_dev, double* dc, double* dv) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  const int64_t real = P_dev ? *P_dev : P;  // entries at and beyond it are padding: they add 0
  for (int64_t q = int64_t(blockIdx.x) * kBlock + threadIdx.x; q < P; q += stride) {
    if (q >= real) {
      dc[q] = 0.0;
      if (dv) dv[q] = 0.0;
      continue;
    }
    const int64_t i = id[q] / m, s = id[q] % m;
    const uint8_t* h = hull + i * m;
    const int64_t a = i * m + h[s - 1], b = i * m + h[s];
    dc[q] = double(costs[b]) - double(costs[a]);
    if (dv) dv[q] = double(values[b]) - double(values[a]);
  }
}

// Cumulative spend along the order (from the base policy) and its running maximum, so that the first
// step that overshoots a budget is a binary search. cum may be null (only the maximum is kept).
template <typename T>
double* spend_prefix_max(const MckpInput<T>& in, const StepOrder<T>& so, double* cum_out, DeviceWorkspace& ws,
                         cudaStream_t stream) {
  const int64_t P = so.sorted;
  double* pm = workspace_array<double>(ws, P);
  if (P == 0) return pm;
  double* cum = cum_out ? cum_out : pm;
  step_deltas_kernel<T>
      <<<grid_blocks(P), kBlock, 0, stream>>>(in.values, in.costs, so.m, so.hull, so.id, P, so.P_dev, cum, nullptr);
  BIDFCL_LAUNCH_CHECK("step_deltas_kernel");
  inclusive_scan<double, SumOp<double>>(cum, cum, P, first_of(so.base), ws, stream);
  inclusive_scan<double, MaxOp<double>>(cum, pm, P, nullptr, ws, stream);
  return pm;
}

// One thread per budget: the cut from the prefix maximum (first position whose value exceeds it).
template <typename T>
__global__ void cut_kernel(const double* prefix_max, int64_t P_host, const int64_t* P_dev, const T* bp,
                           const int64_t* id, int64_t m, const double* base, const double* budgets, int64_t K,
                           Cut<T>* cuts, int64_t* cut_pos) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k >= K) return;
  const int64_t P = P_dev ? *P_dev : P_host;
  const double budget = budgets[k];
  Cut<T> cut;
  cut.infeasible = false;
  cut.take_all = false;
  cut.lam = T(0);
  cut.individual = 0;
  cut.step = 0;
  int64_t pos = 0;
  if (*base > budget) {
    cut.infeasible = true;
  } else {
    int64_t lo = 0, hi = P;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (prefix_max[mid] > budget) hi = mid;
      else lo = mid + 1;
    }
    pos = lo;
    if (pos == P) {
      cut.take_all = true;
    } else {
      cut.lam = bp[pos];
      cut.individual = id[pos] / m;
      cut.step = id[pos] % m;
    }
  }
  cuts[k] = cut;
  if (cut_pos) cut_pos[k] = pos;
}

// steps_taken of mckp_internal.h.
template <typename T>
__device__ void steps_taken_dev(const T* r, const T* c, const uint8_t* h, int len, int64_t i, const Cut<T>& cut,
                                int& taken, int& above) {
  taken = above = 0;
  if (cut.infeasible) return;
  if (cut.take_all) {
    taken = len - 1;
    for (int s = 1; s < len; ++s)
      if (slope_dev(r, c, h[s - 1], h[s]) > T(0)) above = s;
    return;
  }
  for (int s = 1; s < len; ++s) {
    const T bp = slope_dev(r, c, h[s - 1], h[s]);
    if (bp > cut.lam) {
      taken = above = s;
    } else if (bp == cut.lam && (i < cut.individual || (i == cut.individual && s < cut.step))) {
      taken = s;
    } else {
      break;
    }
  }
}

// apply_cuts of mckp_hulls.cpp for one budget: writes choice[i], returns (spend, value, lagrangian term).
template <typename T>
struct ApplyCut {
  const T* values;
  const T* costs;
  const uint8_t* hull;
  const uint16_t* len;
  int64_t m;
  const Cut<T>* cut;
  int64_t* choice;
  __device__ Sum3 operator()(int64_t i) const {
    const Cut<T> ct = *cut;
    const T* r = values + i * m;
    const T* c = costs + i * m;
    const uint8_t* h = hull + i * m;
    int taken, above;
    steps_taken_dev(r, c, h, len[i], i, ct, taken, above);
    const int j = h[taken], ja = h[above];
    choice[i] = j;
    const double lam = ct.infeasible || ct.take_all ? 0.0 : double(ct.lam);
    return {double(c[j]), double(r[j]), sub_rn(double(r[ja]), mul_rn(lam, double(c[ja])))};
  }
};

template <typename T>
__global__ void write_solution_kernel(const Cut<T>* cuts, const Sum3* totals, const double* budgets, int64_t K, T* lam,
                                      double* spend, double* value, double* dual_bound, bool* feasible) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k >= K) return;
  const Cut<T> cut = cuts[k];
  spend[k] = totals[k].a;
  value[k] = totals[k].b;
  feasible[k] = !cut.infeasible;
  if (cut.infeasible) {
    lam[k] = pos_inf<T>();
    dual_bound[k] = -pos_inf<double>();
  } else {
    const T l = cut.take_all ? T(0) : cut.lam;
    lam[k] = l;
    dual_bound[k] = add_rn(mul_rn(double(l), budgets[k]), totals[k].c);
  }
}

unsigned budget_blocks(int64_t K) { return static_cast<unsigned>(ceil_div(K, kBlock)); }

// ---- RCT -----------------------------------------------------------------------------------------

__device__ __forceinline__ bool bad_propensity(float p) { return !(p > 0.0f && p <= 1.0f); }
__device__ __forceinline__ bool bad_propensity(double p) { return !(p > 0.0 && p <= 1.0); }

template <typename T>
__global__ void rct_validate_kernel(const int64_t* treatment, const T* propensity, const T* cost_obs, int64_t n,
                                    int64_t m, ErrorRecord* err) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < n; i += stride) {
    const int64_t t = treatment[i];
    if (t < 0 || t >= m || bad_propensity(propensity[i]) || !isfinite(cost_obs[i]))
      record_min(&err->row, static_cast<unsigned long long>(i));
  }
}

// IPW weight of individual i: cost_obs / propensity / n, as on the CPU (divide, then multiply).
template <typename T>
__device__ __forceinline__ double ipw_weight(const T* cost_obs, const T* propensity, int64_t i, double inv_n) {
  return mul_rn(div_rn(double(cost_obs[i]), double(propensity[i])), inv_n);
}

template <typename T>
struct RctBase {
  const uint8_t* hull;
  const int64_t* treatment;
  const T* cost_obs;
  const T* propensity;
  int64_t m;
  double inv_n;
  __device__ Sum3 operator()(int64_t i) const {
    const double w = hull[i * m] == treatment[i] ? ipw_weight(cost_obs, propensity, i, inv_n) : 0.0;
    return {w, 0.0, 0.0};
  }
};

// Per sorted step: +w when the step moves individual i onto its arm, -w when it moves it off.
template <typename T>
__global__ void rct_deltas_kernel(const uint8_t* hull, const int64_t* id, int64_t P, const int64_t* P_dev, int64_t m,
                                  const int64_t* treatment, const T* cost_obs, const T* propensity, double inv_n,
                                  double* delta) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  const int64_t real = P_dev ? *P_dev : P;  // padding (check = false) adds 0
  for (int64_t q = int64_t(blockIdx.x) * kBlock + threadIdx.x; q < P; q += stride) {
    if (q >= real) {
      delta[q] = 0.0;
      continue;
    }
    const int64_t i = id[q] / m, s = id[q] % m;
    const uint8_t* h = hull + i * m;
    const int64_t t = treatment[i];
    const bool after = h[s] == t, before = h[s - 1] == t;
    double d = 0.0;
    if (after || before) {
      const double w = ipw_weight(cost_obs, propensity, i, inv_n);
      d = after ? w : -w;
    }
    delta[q] = d;
  }
}

template <typename T>
__global__ void write_rct_kernel(const Cut<T>* cuts, const int64_t* cut_pos, const double* cum, const Sum3* base,
                                 int64_t K, T* lam, double* spend, bool* feasible) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k >= K) return;
  const Cut<T> cut = cuts[k];
  const int64_t pos = cut_pos[k];
  feasible[k] = !cut.infeasible;
  lam[k] = cut.infeasible ? pos_inf<T>() : (cut.take_all ? T(0) : cut.lam);
  spend[k] = cut.infeasible || pos == 0 ? base->a : cum[pos - 1];
}

// ---- bisection -----------------------------------------------------------------------------------

template <typename T>
struct RatioOf {
  const T* values;
  const T* costs;
  __device__ T operator()(int64_t q) const {
    const T r = values[q], c = costs[q];
    return c > T(0) && r > T(0) ? div_rn(r, c) : T(0);
  }
};

// argmax_j (r_ij - lam c_ij), ties to the lowest index, the score as two rounded operations.
template <typename T>
struct PolicyAt {
  const T* values;
  const T* costs;
  int64_t m;
  T lam;
  int64_t* choice;  // may be null
  __device__ Sum3 operator()(int64_t i) const {
    const T* r = values + i * m;
    const T* c = costs + i * m;
    int best = 0;
    T best_score = sub_rn(r[0], mul_rn(lam, c[0]));
    for (int j = 1; j < m; ++j) {
      const T score = sub_rn(r[j], mul_rn(lam, c[j]));
      if (score > best_score) {
        best_score = score;
        best = j;
      }
    }
    if (choice) choice[i] = best;
    return {double(c[best]), double(r[best]), double(best_score)};
  }
};

}  // namespace

// ==================================================================================================

template <typename T>
Status run_solve_mckp_cuda(const MckpSolveParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream, bool check) {
  const MckpInput<T>& in = p.in;
  StepOrder<T> so;
  int64_t* slot_end = nullptr;
  Status st = build_hulls_cuda(in, so, slot_end, ws, stream, check);
  if (!st.ok()) return st;
  sort_steps_cuda(in, so, slot_end, ws, stream);
  const double* pm = spend_prefix_max(in, so, nullptr, ws, stream);
  const int64_t K = p.k;
  Cut<T>* cuts = workspace_array<Cut<T>>(ws, K);
  cut_kernel<T><<<budget_blocks(K), kBlock, 0, stream>>>(pm, so.sorted, so.P_dev, so.bp, so.id, in.m, first_of(so.base),
                                                         p.budgets, K, cuts, nullptr);
  BIDFCL_LAUNCH_CHECK("cut_kernel");
  Sum3* totals = workspace_array<Sum3>(ws, K);
  Sum3* partials = workspace_array<Sum3>(ws, reduce_blocks(in.n));
  for (int64_t k = 0; k < K; ++k) {
    const ApplyCut<T> apply{in.values, in.costs, so.hull, so.len, in.m, cuts + k, p.choice + k * in.n};
    reduce<Sum3, Sum3Op>(apply, in.n, partials, totals + k, stream);
  }
  write_solution_kernel<T><<<budget_blocks(K), kBlock, 0, stream>>>(cuts, totals, p.budgets, K, p.lam, p.spend, p.value,
                                                                    p.dual_bound, p.feasible);
  BIDFCL_LAUNCH_CHECK("write_solution_kernel");
  return Status::Ok();
}

template <typename T>
__global__ void frontier_lam_kernel(const T* bp, int64_t P, T* lam) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  for (int64_t q = int64_t(blockIdx.x) * kBlock + threadIdx.x; q <= P; q += stride)
    lam[q] = q == 0 ? pos_inf<T>() : bp[q - 1];
}

__global__ void frontier_base_kernel(const Sum3* base, double* spend, double* value) {
  spend[0] = base->a;
  value[0] = base->b;
}

template <typename T>
Status run_budget_frontier_cuda(const MckpInput<T>& in,
                                const std::function<FrontierDeviceOutput<T>(int64_t)>& make_output, DeviceWorkspace& ws,
                                cudaStream_t stream) {
  StepOrder<T> so;
  int64_t* slot_end = nullptr;
  Status st = build_hulls_cuda(in, so, slot_end, ws, stream, /*check=*/true);  // P sizes the output
  if (!st.ok()) return st;
  sort_steps_cuda(in, so, slot_end, ws, stream);
  const int64_t P = so.P;
  const FrontierDeviceOutput<T> out = make_output(P + 1);
  frontier_lam_kernel<T><<<grid_blocks(P + 1), kBlock, 0, stream>>>(so.bp, P, out.lam);
  BIDFCL_LAUNCH_CHECK("frontier_lam_kernel");
  frontier_base_kernel<<<1, 1, 0, stream>>>(so.base, out.spend, out.value);
  BIDFCL_LAUNCH_CHECK("frontier_base_kernel");
  if (P > 0) {
    double* dc = out.spend + 1;
    double* dv = out.value + 1;
    step_deltas_kernel<T>
        <<<grid_blocks(P), kBlock, 0, stream>>>(in.values, in.costs, in.m, so.hull, so.id, P, nullptr, dc, dv);
    BIDFCL_LAUNCH_CHECK("step_deltas_kernel");
    inclusive_scan<double, SumOp<double>>(dc, dc, P, first_of(so.base), ws, stream);
    inclusive_scan<double, SumOp<double>>(dv, dv, P, second_of(so.base), ws, stream);
  }
  return Status::Ok();
}

template <typename T>
Status run_solve_mckp_rct_cuda(const MckpRctParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream, bool check) {
  const MckpInput<T>& in = p.in;
  const int64_t n = in.n, m = in.m;
  StepOrder<T> so;
  int64_t* slot_end = nullptr;
  // Hull validation first (it wins over the RCT inputs, as on the CPU), then the RCT inputs.
  // The RCT check is enqueued before the sync of build_hulls_cuda, so one round trip serves both.
  // Without checks (check = false) neither runs nor is read back: the kernels below never index
  // memory by a label or value, so bad input gives unspecified numbers, not a fault.
  ErrorRecord* rct_err = nullptr;
  if (check) {
    rct_err = workspace_array<ErrorRecord>(ws, 1);
    BIDFCL_CUDA_CHECK(cudaMemsetAsync(rct_err, 0xFF, sizeof(ErrorRecord), stream));
    rct_validate_kernel<T><<<grid_blocks(n), kBlock, 0, stream>>>(p.treatment, p.propensity, p.cost_obs, n, m, rct_err);
    BIDFCL_LAUNCH_CHECK("rct_validate_kernel");
  }
  Status st = build_hulls_cuda(in, so, slot_end, ws, stream, check);
  if (!st.ok()) return st;
  const ErrorRecord host_rct = check ? copy_to_host(rct_err, stream) : ErrorRecord{kNone, kNone};
  if (host_rct.row != kNone) {
    const int64_t i = static_cast<int64_t>(host_rct.row);
    const int64_t t = copy_to_host(p.treatment + i, stream);
    if (t < 0 || t >= m) return {Code::kBadTreatment, i, m, double(t)};
    const T prop = copy_to_host(p.propensity + i, stream);
    if (!(prop > T(0) && prop <= T(1))) return {Code::kBadPropensity, i, -1, double(prop)};
    const T co = copy_to_host(p.cost_obs + i, stream);
    return {Code::kNonFiniteInput, i, -1, double(co)};
  }
  sort_steps_cuda(in, so, slot_end, ws, stream);
  const int64_t P = so.sorted;
  const double inv_n = 1.0 / double(n);
  // base: estimated spend of the cheapest policy (replaces so.base's spend, which the RCT does not use)
  Sum3* base = workspace_array<Sum3>(ws, 1);
  Sum3* partials = workspace_array<Sum3>(ws, reduce_blocks(n));
  reduce<Sum3, Sum3Op>(RctBase<T>{so.hull, p.treatment, p.cost_obs, p.propensity, m, inv_n}, n, partials, base, stream);
  double* cum = workspace_array<double>(ws, P);
  double* pm = workspace_array<double>(ws, P);
  if (P > 0) {
    rct_deltas_kernel<T><<<grid_blocks(P), kBlock, 0, stream>>>(so.hull, so.id, P, so.P_dev, m, p.treatment, p.cost_obs,
                                                                p.propensity, inv_n, cum);
    BIDFCL_LAUNCH_CHECK("rct_deltas_kernel");
    inclusive_scan<double, SumOp<double>>(cum, cum, P, first_of(base), ws, stream);
    inclusive_scan<double, MaxOp<double>>(cum, pm, P, nullptr, ws, stream);
  }
  const int64_t K = p.k;
  Cut<T>* cuts = workspace_array<Cut<T>>(ws, K);
  int64_t* cut_pos = workspace_array<int64_t>(ws, K);
  cut_kernel<T><<<budget_blocks(K), kBlock, 0, stream>>>(pm, P, so.P_dev, so.bp, so.id, m, first_of(base), p.budgets, K,
                                                         cuts, cut_pos);
  BIDFCL_LAUNCH_CHECK("cut_kernel");
  Sum3* scratch = workspace_array<Sum3>(ws, 1);
  for (int64_t k = 0; k < K; ++k) {
    const ApplyCut<T> apply{in.values, in.costs, so.hull, so.len, m, cuts + k, p.choice + k * n};
    reduce<Sum3, Sum3Op>(apply, n, partials, scratch, stream);
  }
  write_rct_kernel<T><<<budget_blocks(K), kBlock, 0, stream>>>(cuts, cut_pos, cum, base, K, p.lam, p.spend, p.feasible);
  BIDFCL_LAUNCH_CHECK("write_rct_kernel");
  return Status::Ok();
}

template <typename T>
__global__ void write_bisection_kernel(const Sum3* totals, int64_t k, T lam, bool ok, double budget, T* lam_out,
                                       double* spend, double* value, double* dual_bound, bool* feasible) {
  const Sum3 t = *totals;
  lam_out[k] = ok ? lam : pos_inf<T>();
  spend[k] = t.a;
  value[k] = t.b;
  feasible[k] = ok && t.a <= budget;
  dual_bound[k] = ok ? add_rn(mul_rn(double(lam), budget), t.c) : -pos_inf<double>();
}

template <typename T>
Status run_solve_mckp_bisection_cuda(const MckpBisectionParams<T>& bp, const double* budgets_host, DeviceWorkspace& ws,
                                     cudaStream_t stream) {
  const MckpSolveParams<T>& p = bp.out;
  const MckpInput<T>& in = p.in;
  const int64_t n = in.n, m = in.m;
  {
    ErrorRecord* err = workspace_array<ErrorRecord>(ws, 1);
    BIDFCL_CUDA_CHECK(cudaMemsetAsync(err, 0xFF, sizeof(ErrorRecord), stream));
    validate_kernel<T><<<grid_blocks(n), kBlock, 0, stream>>>(in.values, in.costs, n, static_cast<int>(m), err);
    BIDFCL_LAUNCH_CHECK("validate_kernel");
    const ErrorRecord host_err = copy_to_host(err, stream);
    Status st = cell_status(in.values, in.costs, m, host_err.cell, stream);
    if (!st.ok()) return st;
  }
  Sum3* partials = workspace_array<Sum3>(ws, reduce_blocks(n));
  Sum3* totals = workspace_array<Sum3>(ws, 1);
  auto evaluate_on_device = [&](T lam, int64_t* choice) {
    reduce<Sum3, Sum3Op>(PolicyAt<T>{in.values, in.costs, m, lam, choice}, n, partials, totals, stream);
  };
  auto spend_at = [&](T lam) {
    evaluate_on_device(lam, nullptr);
    return copy_to_host(totals, stream).a;
  };
  T ratio_max;
  {
    T* rpart = workspace_array<T>(ws, reduce_blocks(n * m));
    T* rmax = workspace_array<T>(ws, 1);
    reduce<T, MaxOp<T>>(RatioOf<T>{in.values, in.costs}, n * m, rpart, rmax, stream);
    ratio_max = copy_to_host(rmax, stream);
    if (ratio_max < T(0)) ratio_max = T(0);  // max starts at -inf; the CPU starts at 0
  }
  if (!(ratio_max > T(0))) ratio_max = T(1);
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const double budget = budgets_host[kk];
    T lo = T(0), hi = ratio_max;
    bool feasible = true;
    if (spend_at(T(0)) <= budget) {
      hi = T(0);
    } else {
      int doublings = 0;
      while (spend_at(hi) > budget) {
        lo = hi;
        hi = hi * T(2);
        if (++doublings > 64 || !std::isfinite(double(hi))) {
          feasible = false;
          break;
        }
      }
      for (int64_t it = 0; feasible && it < bp.max_iter && (hi - lo) > T(bp.tol) * hi; ++it) {
        const T mid = lo + (hi - lo) / T(2);
        if (spend_at(mid) <= budget) hi = mid;
        else lo = mid;
      }
    }
    if (!feasible) hi = lo;
    evaluate_on_device(hi, p.choice + kk * n);
    write_bisection_kernel<T>
        <<<1, 1, 0, stream>>>(totals, kk, hi, feasible, budget, p.lam, p.spend, p.value, p.dual_bound, p.feasible);
    BIDFCL_LAUNCH_CHECK("write_bisection_kernel");
  }
  return Status::Ok();
}

// ---- lazy validation: the eager checks' findings as a device status record, no host read ---------

__global__ void label_check_kernel(const int64_t* treatment, int64_t n, int64_t m, unsigned long long* first) {
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  for (int64_t i = int64_t(blockIdx.x) * kBlock + threadIdx.x; i < n; i += stride) {
    const int64_t t = treatment[i];
    if (t < 0 || t >= m) record_min(first, static_cast<unsigned long long>(i));
  }
}

__global__ void budget_check_kernel(const double* budgets, int64_t K, unsigned long long* first) {
  const int64_t k = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (k >= K) return;
  const double b = budgets[k];
  if (!isfinite(b) || b < 0) record_min(first, static_cast<unsigned long long>(k));
}

// One thread: the first record in the eager order, with the offending entry read on the device.
template <typename T>
__global__ void mckp_status_kernel(MckpCheckParams<T> p, const unsigned long long* label,
                                   const unsigned long long* budget, const ErrorRecord* err, int64_t* status) {
  int64_t code = 0, row = -1, col = -1, value = 0;
  const bool rct = p.treatment != nullptr;
  if (rct && *label != kNone) {
    row = static_cast<int64_t>(*label);
    code = static_cast<int64_t>(Code::kBadTreatment);
    col = p.m;
    value = p.treatment[row];
  } else if (*budget != kNone) {
    row = static_cast<int64_t>(*budget);
    const double b = p.budgets[row];
    code = isfinite(b) ? kCodeNegativeBudget : kCodeNonFiniteBudget;
    value = __double_as_longlong(b);
  } else if (err->cell != kNone) {
    const int64_t flat = static_cast<int64_t>(err->cell);
    const T r = p.values[flat], c = p.costs[flat];
    row = flat / p.m;
    col = flat % p.m;
    const bool bad_value = !isfinite(r);
    code = static_cast<int64_t>(bad_value ? Code::kNonFiniteValue
                                          : (!isfinite(c) ? Code::kNonFiniteCost : Code::kNegativeCost));
    value = __double_as_longlong(bad_value ? double(r) : double(c));
  } else if (rct && err->row != kNone) {
    row = static_cast<int64_t>(err->row);
    const T prop = p.propensity[row];
    if (bad_propensity(prop)) {
      code = static_cast<int64_t>(Code::kBadPropensity);
      value = __double_as_longlong(double(prop));
    } else {
      code = static_cast<int64_t>(Code::kNonFiniteInput);
      value = __double_as_longlong(double(p.cost_obs[row]));
    }
  }
  if (code == 0) row = col = -1;
  write_status_record(status, {code, row, col, value, rct ? kFamilyRct : kFamilySolve});
}

template <typename T>
void run_validate_mckp_cuda(const MckpCheckParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream) {
  // records: [0] first bad label, [1] first bad budget, [2..3] ErrorRecord (cell, RCT row)
  auto* rec = workspace_array<unsigned long long>(ws, 4);
  BIDFCL_CUDA_CHECK(cudaMemsetAsync(rec, 0xFF, 4 * sizeof(unsigned long long), stream));
  ErrorRecord* err = reinterpret_cast<ErrorRecord*>(rec + 2);
  const int64_t n = p.n, m = p.m;
  if (p.treatment) {
    label_check_kernel<<<grid_blocks(n), kBlock, 0, stream>>>(p.treatment, n, m, rec);
    BIDFCL_LAUNCH_CHECK("label_check_kernel");
    rct_validate_kernel<T><<<grid_blocks(n), kBlock, 0, stream>>>(p.treatment, p.propensity, p.cost_obs, n, m, err);
    BIDFCL_LAUNCH_CHECK("rct_validate_kernel");
  }
  if (p.k > 0) {
    budget_check_kernel<<<budget_blocks(p.k), kBlock, 0, stream>>>(p.budgets, p.k, rec + 1);
    BIDFCL_LAUNCH_CHECK("budget_check_kernel");
  }
  validate_kernel<T><<<grid_blocks(n), kBlock, 0, stream>>>(p.values, p.costs, n, static_cast<int>(m), err);
  BIDFCL_LAUNCH_CHECK("validate_kernel");
  mckp_status_kernel<T><<<1, 1, 0, stream>>>(p, rec, rec + 1, err, p.status);
  BIDFCL_LAUNCH_CHECK("mckp_status_kernel");
}

#define BIDFCL_INSTANTIATE(T)                                                                                       \
  template void run_validate_mckp_cuda<T>(const MckpCheckParams<T>&, DeviceWorkspace&, cudaStream_t);               \
  template Status run_solve_mckp_cuda<T>(const MckpSolveParams<T>&, DeviceWorkspace&, cudaStream_t, bool);          \
  template Status run_solve_mckp_bisection_cuda<T>(const MckpBisectionParams<T>&, const double*, DeviceWorkspace&,  \
                                                   cudaStream_t);                                                   \
  template Status run_budget_frontier_cuda<T>(                                                                      \
      const MckpInput<T>&, const std::function<FrontierDeviceOutput<T>(int64_t)>&, DeviceWorkspace&, cudaStream_t); \
  template Status run_solve_mckp_rct_cuda<T>(const MckpRctParams<T>&, DeviceWorkspace&, cudaStream_t, bool);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
