// AFM's pair products + attention pooling on the CPU, samples as SIMD lanes: see afm_kernel.py for why.
//
// A block of L samples is transposed to (F, E, L), so that every per-sample quantity (one pair's q, z,
// score, gradient) is a row of L lanes and every operation is a plain vector operation with the shared
// attention parameters broadcast: no gathers, no horizontal sums, no tails inside a sample. One block's
// scores (P, L) stay in L1/L2; nothing of size (B, P, E) or (B, P, A) is ever written to memory.
//
// A row is one vector register of the ISA the file is compiled for (kVecBytes: 64 bytes with AVX-512, 32
// with AVX/AVX2, 16 otherwise), and the work is arranged as small register tiles (a few pairs by a few
// hidden units, or a few hidden units by a few embedding columns) whose accumulators and operands fit the
// ISA's register file (32 vector registers with AVX-512, 16 with AVX2): each loaded row feeds several
// FMAs and nothing spills. E and A are padded (with zeros that change nothing) to multiples of 4.
//
// Pairs are p = (i, j), i < j, row-major (torch.triu_indices(F, F, 1)), as in the reference. The pairs of
// one i (j = i + 1 .. F - 1) are "the group of i"; k = j - i - 1 numbers them within it.
// Tensors: V (B, F, E), W (A, E), b (A), h (A), mask (B, P) or empty (no dropout), g (B, E).
// Registered as torch operators (TORCH_LIBRARY), not as a pybind module: torch.compile then sees ops with
// a schema (afm_kernel.py gives them their fake tensors) instead of a graph break, and only the headers
// below are compiled: <ATen/ATen.h> with pybind's casters took 11 s of each build here, these 4 s.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include <string>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kMaxGeneric = 64;   // E and A of the run-time-sized kernel (afm_kernel.py checks)

// The vector unit this file is compiled for (afm_kernel.py's CTRBENCH_AFM_KERNEL_ISA picks the flags).
#if defined(__AVX512F__)
constexpr int kVecBytes = 64, kRegs = 32;
#elif defined(__AVX__)
constexpr int kVecBytes = 32, kRegs = 16;
#else
constexpr int kVecBytes = 16, kRegs = 16;
#endif

const char* isa_name() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE2__)
  return "sse2";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "generic";
#endif
}

// Register tiles (see the top): kTJ pairs x kTA hidden units (z = W q + b), kTA hidden units x kTE
// embedding columns (the backward's T = D^T V), kTJ pairs x kTQ embedding columns (the backward's dq).
// A tile's accumulators, the rows it holds (one per tile row) and one streamed row must fit the register
// file, else GCC spills an accumulator and its chain of FMAs waits on a store and a load every step
// (what the 16-lane rows of the first version did on AVX2: 64-byte rows as pairs of ymm registers, 16
// rows of z and 16 of q live at once, half of them on the stack). With 16 registers: 2 x 4 + 2 + 1 (z),
// 4 x 2 + 4 + 2 (T), 2 x 4 + 2 + 1 (dq); with 32, 6 x 4 + 6 + 1. Sizes chosen by measurement.
constexpr int kTA = 4;                       // also the padding of E and A
constexpr int kTJ = kRegs >= 32 ? 6 : 2;
constexpr int kTE = 2;
constexpr int kTQ = 4;
constexpr int64_t kPad = 4;

// Parallelism is ATen's: at::parallel_for runs on torch's intra-op pool (its threads are made once and
// reused; torch.set_num_threads sets how many) and, at one thread or inside another parallel region,
// runs inline on the calling thread. Where that pool is OpenMP's (torch's Linux builds), parallel_for is
// a header template whose `omp parallel` is compiled into this file: without -fopenmp, which
// afm_kernel.py passes, it would run every range serially.
//
// The unit of work is a block of L samples. A task gets at least kTaskRows vector-row operations' worth
// of blocks, so that handing it to a pool thread pays off (a block at F = 39 is far more than that, at
// F = 2 far less).
constexpr int64_t kTaskRows = int64_t(1) << 14;

// The backward's weight gradients are sums over all samples. They are summed per chunk (a fixed run of
// blocks, the same whatever the thread count) and the chunks' sums added in chunk order afterwards, so
// the result has the same bits for every thread count and every split of the chunks among threads.
// Closing a chunk adds up the lanes of its A * E + A rows (lane_sums: a few vector operations a row); a
// chunk does at least kChunkWork vector-row operations per such row, so that closing costs about 1 %.
// At most kMaxChunks chunks: their partial sums take chunks * (A * E + A) scalars.
constexpr int64_t kChunkWork = 256;
constexpr int64_t kMaxChunks = 512;

int64_t ceil_div(int64_t n, int64_t d) { return (n + d - 1) / d; }
int64_t round_up(int64_t n, int64_t d) { return ceil_div(n, d) * d; }

// blocks per task (or chunk) for blocks costing about rows_per_block vector-row operations each
int64_t blocks_per_task(int64_t rows_per_block) {
  return std::max<int64_t>(1, ceil_div(kTaskRows, std::max<int64_t>(1, rows_per_block)));
}

// One row of L lanes (L samples), one vector register: arithmetic on it is element-wise.
template <typename T>
struct LanesOf;
template <>
struct LanesOf<float> { typedef float type __attribute__((vector_size(kVecBytes), __may_alias__)); };
template <>
struct LanesOf<double> { typedef double type __attribute__((vector_size(kVecBytes), __may_alias__)); };
template <typename T>
using Lanes = typename LanesOf<T>::type;
template <typename T>
constexpr int kLanes = kVecBytes / sizeof(T);

// Lane indices for GCC's __builtin_shuffle: integers of the lanes' width, as many as there are lanes.
template <typename T>
struct MaskOf;
template <>
struct MaskOf<float> { typedef int32_t type __attribute__((vector_size(kVecBytes))); };
template <>
struct MaskOf<double> { typedef int64_t type __attribute__((vector_size(kVecBytes))); };

// out[k] = the sum of rows[k]'s lanes, k < n, always added up in one order, a pairwise tree of neighbours:
// ((l0 + l1) + (l2 + l3)) + ... L rows at a time go as L vectors: each step adds the neighbouring lanes of
// two vectors into one (half the lanes from each), and after log2(L) steps lane k holds row k's sum.
template <typename T>
void lane_sums(const Lanes<T>* __restrict__ rows, int64_t n, T* __restrict__ out) {
  constexpr int L = kLanes<T>;
  int64_t k = 0;
#if defined(__GNUC__) && !defined(__clang__)
  using Mask = typename MaskOf<T>::type;
  Mask even, odd;   // lanes of the concatenation (a, b)
  for (int l = 0; l < L; ++l) {
    even[l] = 2 * l;
    odd[l] = 2 * l + 1;
  }
  for (; k + L <= n; k += L) {
    Lanes<T> level[L];
    for (int l = 0; l < L; ++l) level[l] = rows[k + l];
    for (int width = L; width > 1; width /= 2)
      for (int i = 0; i < width / 2; ++i)
        level[i] = __builtin_shuffle(level[2 * i], level[2 * i + 1], even) +
                   __builtin_shuffle(level[2 * i], level[2 * i + 1], odd);
    for (int l = 0; l < L; ++l) out[k + l] = level[0][l];
  }
#endif
  for (; k < n; ++k) {   // the rest (or all, without GCC's shuffles), in the same order
    T t[L];
    for (int l = 0; l < L; ++l) t[l] = rows[k][l];
    for (int width = L / 2; width >= 1; width /= 2)
      for (int i = 0; i < width; ++i) t[i] = t[2 * i] + t[2 * i + 1];
    out[k] = t[0];
  }
}

// A range of `count` cut into tiles of N, then the rest into smaller ones: f(k0, integral_constant<n>)
// for each tile [k0, k0 + n), n (<= N) known at compile time, so that tile loops unroll.
template <int N, typename Fn>
inline void tiles(int64_t count, const Fn& f) {
  int64_t k0 = 0;
  for (; k0 + N <= count; k0 += N) f(k0, std::integral_constant<int, N>{});
  const int64_t rest = count - k0;
  if constexpr (N > 1) {
    if (rest > 0) {
      if (rest == 1) f(k0, std::integral_constant<int, 1>{});
      if constexpr (N > 2) if (rest == 2) f(k0, std::integral_constant<int, 2>{});
      if constexpr (N > 3) if (rest == 3) f(k0, std::integral_constant<int, 3>{});
      if constexpr (N > 4) if (rest >= 4) tiles<N - 1>(rest, [&](int64_t k, auto n) { f(k0 + k, n); });
    }
  }
}

// exp of every lane, for x <= 0 (softmax's scores less their maximum). float: Cephes' expf (2^n by the
// exponent bits, a degree-5 polynomial on |r| <= ln2 / 2; within 1 ulp of std::exp on [-87, 0]), all lanes at once;
// below -87 (where expf leaves the normal floats) it gives exp(-87), which a sum of at least 1 cannot
// tell from 0. double: std::exp lane by lane.
template <typename T>
inline Lanes<T> exp_lanes(Lanes<T> x) {
  if constexpr (std::is_same<T, float>::value) {
    using R = Lanes<float>;
    using I = typename MaskOf<float>::type;
    x = x < -87.0f ? R{} - 87.0f : x;
    const R magic = R{} + 12582912.0f;                 // 1.5 * 2^23: adding it rounds to an integer
    const R t = x * 1.44269504088896341f + magic;
    const R n = t - magic;                             // round(x / ln 2)
    R r = x - n * 0.693359375f;                        // x - n ln 2, ln 2 in two parts
    r = r - n * -2.12194440e-4f;
    R y = R{} + 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.0f;
    const I bits = ((I)t - (I)magic + 127) << 23;      // 2^n, n >= -126
    return y * (R)bits;
  } else {
    for (int l = 0; l < kLanes<T>; ++l) x[l] = std::exp(x[l]);
    return x;
  }
}

template <typename T>
inline Lanes<T> relu(Lanes<T> x) { return x > 0 ? x : Lanes<T>{}; }

// One bit per lane: which of a row's lanes are > 0 (z's ReLU mask, kept from the forward for the backward).
template <typename T>
using Bits = typename std::conditional<(kLanes<T> > 8), uint16_t, uint8_t>::type;

template <typename T>
inline Bits<T> positive_bits(Lanes<T> x) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) return _mm512_cmp_ps_mask((__m512)x, _mm512_setzero_ps(), _CMP_GT_OQ);
  else return _mm512_cmp_pd_mask((__m512d)x, _mm512_setzero_pd(), _CMP_GT_OQ);
#elif defined(__AVX__)
  if constexpr (std::is_same<T, float>::value) return _mm256_movemask_ps((__m256)(x > 0));
  else return _mm256_movemask_pd((__m256d)(x > 0));
#elif defined(__SSE2__)
  if constexpr (std::is_same<T, float>::value) return _mm_movemask_ps((__m128)(x > 0));
  else return _mm_movemask_pd((__m128d)(x > 0));
#else
  unsigned bits = 0;
  for (int l = 0; l < kLanes<T>; ++l) bits |= unsigned(x[l] > 0) << l;
  return Bits<T>(bits);
#endif
}

// x in the lanes whose bit is set, 0 elsewhere
template <typename T>
inline Lanes<T> where_bits(Bits<T> bits, Lanes<T> x) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) return (Lanes<T>)_mm512_maskz_mov_ps(bits, (__m512)x);
  else return (Lanes<T>)_mm512_maskz_mov_pd(bits, (__m512d)x);
#else
  using I = typename MaskOf<T>::type;
  I lane;
  for (int l = 0; l < kLanes<T>; ++l) lane[l] = typename std::remove_reference<decltype(lane[0])>::type(1) << l;
  return (Lanes<T>)((I)x & (((I{} + bits) & lane) != 0));
#endif
}

// The attention parameters as rows, each scalar broadcast to all lanes, padded with zeros to (Ap, Ep).
template <typename T>
struct Params {
  using R = Lanes<T>;
  std::vector<R> W, Wh, b, h;   // (Ap, Ep), (Ap, Ep): h[a] W[a], (Ap), (Ap)
  Params(const T* w, const T* bb, const T* hh, int64_t A, int64_t E, int64_t Ep, int64_t Ap)
      : W(Ap * Ep), Wh(Ap * Ep), b(Ap), h(Ap) {
    for (int64_t a = 0; a < A; ++a) {
      b[a] = R{} + bb[a];
      h[a] = R{} + hh[a];
      for (int64_t e = 0; e < E; ++e) {
        W[a * Ep + e] = R{} + w[a * E + e];
        Wh[a * Ep + e] = R{} + hh[a] * w[a * E + e];
      }
    }
  }
};

// E_, A_ > 0 are compile-time (padded) sizes (loops unrolled), 0 means run-time.
template <typename T, int E_, int A_>
struct Block {
  using R = Lanes<T>;
  int64_t F, P, Ep_, Ap_;     // padded E and A: multiples of kPad
  const R* __restrict__ W;    // (Ap, Ep)
  const R* __restrict__ Wh;   // (Ap, Ep): h[a] W[a]
  const R* __restrict__ b;    // (Ap)
  const R* __restrict__ h;    // (Ap)

  int64_t Ep() const { return E_ > 0 ? E_ : Ep_; }
  int64_t Ap() const { return A_ > 0 ? A_ : Ap_; }

  // Q (n x Ep rows) <- q of the group of i: v_i * v_j, j = i + 1 + k
  void products(const R* __restrict__ v, int64_t i, int64_t n, R* __restrict__ Q) const {
    const int64_t Ep_n = Ep();
    const R* vi = v + i * Ep_n;
    const R* vj = vi + Ep_n;
    for (int64_t k = 0; k < n; ++k)
#pragma GCC unroll 16
      for (int64_t e = 0; e < Ep_n; ++e) Q[k * Ep_n + e] = vi[e] * vj[k * Ep_n + e];
  }

  // acc[t][u] = z[a0 + u] of pair k0 + t, z = W q + b, for a tile of NJ pairs by kTA hidden units
  template <int NJ>
  inline void z_tile(const R* __restrict__ Q, int64_t a0, R (&acc)[NJ][kTA]) const {
    const int64_t Ep_n = Ep();
    for (int t = 0; t < NJ; ++t)
      for (int u = 0; u < kTA; ++u) acc[t][u] = b[a0 + u];
    const R* w = W + a0 * Ep_n;
#pragma GCC unroll 4
    for (int64_t e = 0; e < Ep_n; ++e) {
      R q[NJ];
      for (int t = 0; t < NJ; ++t) q[t] = Q[t * Ep_n + e];
      for (int u = 0; u < kTA; ++u) {
        const R wu = w[u * Ep_n + e];
        for (int t = 0; t < NJ; ++t) acc[t][u] += q[t] * wu;
      }
    }
  }

  // weights (P rows) <- softmax over pairs of h . relu(z), for the block v (F·Ep rows); Q: scratch.
  // Keep: zbits (P·Ap) <- the bits of z > 0, for the backward.
  template <bool Keep>
  void softmax_weights(const R* __restrict__ v, R* __restrict__ weights, R* __restrict__ Q,
                       Bits<T>* __restrict__ zbits) const {
    const int64_t Ep_n = Ep(), Ap_n = Ap();
    int64_t p0 = 0;
    for (int64_t i = 0; i + 1 < F; ++i) {
      const int64_t n = F - 1 - i;
      products(v, i, n, Q);
      tiles<kTJ>(n, [&](int64_t k0, auto nj) {
        constexpr int NJ = decltype(nj)::value;
        R s[NJ] = {};
        for (int64_t a0 = 0; a0 < Ap_n; a0 += kTA) {
          R acc[NJ][kTA];
          z_tile<NJ>(Q + k0 * Ep_n, a0, acc);
          for (int t = 0; t < NJ; ++t)
            for (int u = 0; u < kTA; ++u) {
              s[t] += h[a0 + u] * relu<T>(acc[t][u]);
              if constexpr (Keep) zbits[(p0 + k0 + t) * Ap_n + a0 + u] = positive_bits<T>(acc[t][u]);
            }
        }
        for (int t = 0; t < NJ; ++t) weights[p0 + k0 + t] = s[t];
      });
      p0 += n;
    }
    R top = weights[0];
    for (int64_t p = 1; p < P; ++p) top = weights[p] > top ? weights[p] : top;
    R total{};
    for (int64_t p = 0; p < P; ++p) {
      const R x = exp_lanes<T>(weights[p] - top);
      weights[p] = x;
      total += x;
    }
    const R inverse = T(1) / total;
    for (int64_t p = 0; p < P; ++p) weights[p] *= inverse;
  }

  // c (Ep rows) = sum_k a_k v_{i+1+k}, a = w * mask over the group of i (first pair p0)
  inline void weighted_partners(const R* __restrict__ v, const R* __restrict__ weights,
                                const R* __restrict__ mask, int64_t i, int64_t p0, R* __restrict__ c) const {
    const int64_t Ep_n = Ep(), n = F - 1 - i;
    const R* vj = v + (i + 1) * Ep_n;
    for (int64_t e0 = 0; e0 < Ep_n; e0 += 2 * kTQ) {
      const int64_t ne = std::min<int64_t>(2 * kTQ, Ep_n - e0);
      if (ne == 2 * kTQ) {
        R acc[2 * kTQ] = {};
        for (int64_t k = 0; k < n; ++k) {
          const R ap = mask ? weights[p0 + k] * mask[p0 + k] : weights[p0 + k];
          for (int w = 0; w < 2 * kTQ; ++w) acc[w] += ap * vj[k * Ep_n + e0 + w];
        }
        for (int w = 0; w < 2 * kTQ; ++w) c[e0 + w] = acc[w];
      } else {
        R acc[kTQ] = {};
        for (int64_t k = 0; k < n; ++k) {
          const R ap = mask ? weights[p0 + k] * mask[p0 + k] : weights[p0 + k];
          for (int w = 0; w < kTQ; ++w) acc[w] += ap * vj[k * Ep_n + e0 + w];
        }
        for (int w = 0; w < kTQ; ++w) c[e0 + w] = acc[w];
      }
    }
  }

  // out (Ep rows) = sum_p a_p q_p = sum_i v_i * (sum_{j>i} a_ij v_j), a = w * mask; c: Ep rows scratch
  void pool(const R* __restrict__ v, const R* __restrict__ weights, const R* __restrict__ mask,
            R* __restrict__ out, R* __restrict__ c) const {
    const int64_t Ep_n = Ep();
    for (int64_t e = 0; e < Ep_n; ++e) out[e] = R{};
    int64_t p0 = 0;
    for (int64_t i = 0; i + 1 < F; ++i) {
      weighted_partners(v, weights, mask, i, p0, c);
      for (int64_t e = 0; e < Ep_n; ++e) out[e] += v[i * Ep_n + e] * c[e];
      p0 += F - 1 - i;
    }
  }

  // dv (F·Ep rows) written; dW_acc (Ap·Ep rows) += dZ'^T Q; db_acc (Ap rows) += sum dZ'; da (P rows),
  // Q ((F-1)·Ep rows), D ((F-1)·Ap rows), ds and ap (F-1 rows), c (Ep rows) are scratch.
  // Algebra (afm_fused.py): da_p = m_p g.q_p, ds_p = w_p (da_p - sum_r w_r da_r), dZ'_pa = ds_p [z_pa > 0],
  // dq_p = dZ'_p (h W) + a_p g, dv_i += dq_p v_j, dv_j += dq_p v_i. Per group of i, with the group's dZ'
  // rows D and T_i = D^T V_{j>i} (Ap x Ep): dW_acc += v_i * T_i, dv_i += colsum(Wh * T_i) + g * c_i
  // (c_i = sum_j a_ij v_j), dv_j += v_i * (D_j Wh + a_ij g): two (A x E)-per-pair products (T and dq),
  // three where z is recomputed for its ReLU mask.
  // Saved: zbits (P·Ap) holds the forward's bits of z > 0 (else z is recomputed).
  template <bool Saved>
  void backward(const R* __restrict__ v, const R* __restrict__ weights, const R* __restrict__ mask,
                const Bits<T>* __restrict__ zbits,
                const R* __restrict__ g, R* __restrict__ dv, R* __restrict__ da, R* __restrict__ dW_acc,
                R* __restrict__ db_acc, R* __restrict__ Q, R* __restrict__ D, R* __restrict__ ds,
                R* __restrict__ ap, R* __restrict__ c) const {
    const int64_t Ep_n = Ep(), Ap_n = Ap();
    // pass 1: da and sum_r w_r da_r
    R weighted{};
    int64_t p0 = 0;
    for (int64_t i = 0; i + 1 < F; ++i) {
      const int64_t n = F - 1 - i;
      R* gv = c;
      for (int64_t e = 0; e < Ep_n; ++e) gv[e] = g[e] * v[i * Ep_n + e];
      const R* vj = v + (i + 1) * Ep_n;
      tiles<4>(n, [&](int64_t k0, auto nj) {
        constexpr int NJ = decltype(nj)::value;
        R d[2][NJ] = {};   // even and odd e: twice the chains of FMAs
#pragma GCC unroll 16
        for (int64_t e = 0; e < Ep_n; e += 2)
          for (int odd = 0; odd < 2; ++odd)
            for (int t = 0; t < NJ; ++t) d[odd][t] += gv[e + odd] * vj[(k0 + t) * Ep_n + e + odd];
        for (int t = 0; t < NJ; ++t) {
          const R dt = d[0][t] + d[1][t];
          da[p0 + k0 + t] = mask ? dt * mask[p0 + k0 + t] : dt;
        }
      });
      p0 += n;
    }
    for (int64_t p = 0; p < P; ++p) weighted += weights[p] * da[p];

    for (int64_t k = 0; k < F * Ep_n; ++k) dv[k] = R{};
    p0 = 0;
    for (int64_t i = 0; i + 1 < F; ++i) {
      const int64_t n = F - 1 - i;
      const R* vi = v + i * Ep_n;
      const R* vj = vi + Ep_n;
      R* dvi = dv + i * Ep_n;
      R* dvj = dvi + Ep_n;
      for (int64_t k = 0; k < n; ++k) {
        const R w = weights[p0 + k];
        ds[k] = w * (da[p0 + k] - weighted);
        ap[k] = mask ? w * mask[p0 + k] : w;
      }
      // D = dZ' of the group: ds where z > 0
      if constexpr (Saved) {
        for (int64_t k = 0; k < n; ++k)
#pragma GCC unroll 16
          for (int64_t a = 0; a < Ap_n; ++a) D[k * Ap_n + a] = where_bits<T>(zbits[(p0 + k) * Ap_n + a], ds[k]);
      } else {
      products(v, i, n, Q);
      tiles<kTJ>(n, [&](int64_t k0, auto nj) {
        constexpr int NJ = decltype(nj)::value;
        for (int64_t a0 = 0; a0 < Ap_n; a0 += kTA) {
          R acc[NJ][kTA];
          z_tile<NJ>(Q + k0 * Ep_n, a0, acc);
          for (int t = 0; t < NJ; ++t)
            for (int u = 0; u < kTA; ++u) D[(k0 + t) * Ap_n + a0 + u] = acc[t][u] > 0 ? ds[k0 + t] : R{};
        }
      });
      }
      // db_acc += sum_k D_k
      for (int64_t a0 = 0; a0 < Ap_n; a0 += kTA) {   // kTA chains of additions at once
        R sum[kTA];
        for (int u = 0; u < kTA; ++u) sum[u] = db_acc[a0 + u];
        for (int64_t k = 0; k < n; ++k)
          for (int u = 0; u < kTA; ++u) sum[u] += D[k * Ap_n + a0 + u];
        for (int u = 0; u < kTA; ++u) db_acc[a0 + u] = sum[u];
      }
      // T = D^T V_{j>i}, tile by tile: dW_acc += v_i * T, dv_i += colsum(Wh * T)
      for (int64_t a0 = 0; a0 < Ap_n; a0 += kTA)
        for (int64_t e0 = 0; e0 < Ep_n; e0 += kTE) {
          R acc[kTA][kTE] = {};
#pragma GCC unroll 4   // a run-time count, one FMA per accumulator a step: unrolled, 10-20 % faster
          for (int64_t k = 0; k < n; ++k) {
            R x[kTE];
            for (int w = 0; w < kTE; ++w) x[w] = vj[k * Ep_n + e0 + w];
            for (int u = 0; u < kTA; ++u) {
              const R d = D[k * Ap_n + a0 + u];
              for (int w = 0; w < kTE; ++w) acc[u][w] += d * x[w];
            }
          }
          for (int w = 0; w < kTE; ++w) {
            R s = dvi[e0 + w];
            for (int u = 0; u < kTA; ++u) {
              dW_acc[(a0 + u) * Ep_n + e0 + w] += vi[e0 + w] * acc[u][w];
              s += Wh[(a0 + u) * Ep_n + e0 + w] * acc[u][w];
            }
            dvi[e0 + w] = s;
          }
        }
      // dv_i += g * c, c = sum_j a_ij v_j
      weighted_partners(v, weights, mask, i, p0, c);
      for (int64_t e = 0; e < Ep_n; ++e) dvi[e] += g[e] * c[e];
      // dv_j += v_i * (D_j Wh + a_ij g)
      tiles<kTJ>(n, [&](int64_t k0, auto nj) {
        constexpr int NJ = decltype(nj)::value;
        for (int64_t e0 = 0; e0 < Ep_n; e0 += kTQ) {
          R acc[NJ][kTQ];
          for (int t = 0; t < NJ; ++t)
            for (int w = 0; w < kTQ; ++w) acc[t][w] = ap[k0 + t] * g[e0 + w];
#pragma GCC unroll 4
          for (int64_t a = 0; a < Ap_n; ++a) {
            R d[NJ];
            for (int t = 0; t < NJ; ++t) d[t] = D[(k0 + t) * Ap_n + a];
            for (int w = 0; w < kTQ; ++w) {
              const R x = Wh[a * Ep_n + e0 + w];
              for (int t = 0; t < NJ; ++t) acc[t][w] += d[t] * x;
            }
          }
          for (int t = 0; t < NJ; ++t)
            for (int w = 0; w < kTQ; ++w) dvj[(k0 + t) * Ep_n + e0 + w] += vi[e0 + w] * acc[t][w];
        }
      });
      p0 += n;
    }
  }
};

template <typename T>
using Rows = std::vector<Lanes<T>>;   // zero-initialised, aligned to the vector

// samples [s0, s0 + L) of a (B, R, C) tensor -> R·Cp rows of L lanes (Cp >= C: zero columns), zero past B
template <typename T>
void to_lanes(const T* src, int64_t B, int64_t R, int64_t C, int64_t Cp, int64_t s0, Rows<T>& dst) {
  constexpr int L = kLanes<T>;
  for (int l = 0; l < L; ++l) {
    const int64_t s = s0 + l;
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t c = 0; c < C; ++c) dst[r * Cp + c][l] = s < B ? src[(s * R + r) * C + c] : T(0);
      for (int64_t c = C; c < Cp; ++c) dst[r * Cp + c][l] = T(0);
    }
  }
}

template <typename T>
void from_lanes(const Rows<T>& src, int64_t B, int64_t R, int64_t C, int64_t Cp, int64_t s0, T* dst) {
  constexpr int L = kLanes<T>;
  for (int l = 0; l < L && s0 + l < B; ++l)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) dst[((s0 + l) * R + r) * C + c] = src[r * Cp + c][l];
}

template <typename T, typename Run>
void with_block(const at::Tensor& V, const at::Tensor& W, const at::Tensor& b, const at::Tensor& h,
                const Run& run) {
  const int64_t F = V.size(1), E = V.size(2), A = W.size(0);
  TORCH_CHECK(E <= kMaxGeneric && A <= kMaxGeneric, "afm_kernel: E and A must be <= ", kMaxGeneric);
  const int64_t Ep = round_up(E, kPad), Ap = round_up(A, kPad);
  const at::Tensor Wc = W.contiguous(), bc = b.contiguous(), hc = h.contiguous();
  const Params<T> params(Wc.data_ptr<T>(), bc.data_ptr<T>(), hc.data_ptr<T>(), A, E, Ep, Ap);
  const int64_t P = F * (F - 1) / 2;
  // E = A = 16 (the default) gets a block with its sizes known at compile time, in float32 only: float64 is
  // for exactness checks, and its own copy of that block cost each build ~10 s of g++ for no run anyone times.
  if constexpr (std::is_same_v<T, float>) {
    if (Ep == 16 && Ap == 16) {
      run(Block<T, 16, 16>{F, P, Ep, Ap, params.W.data(), params.Wh.data(), params.b.data(), params.h.data()});
      return;
    }
  }
  run(Block<T, 0, 0>{F, P, Ep, Ap, params.W.data(), params.Wh.data(), params.b.data(), params.h.data()});
}

void check_inputs(const at::Tensor& V, const at::Tensor& W, const at::Tensor& mask) {
  TORCH_CHECK(V.device().is_cpu() && V.dim() == 3 && V.is_contiguous(),
              "afm_kernel: V must be a contiguous CPU (B, F, E) tensor");
  TORCH_CHECK(W.dim() == 2 && W.size(1) == V.size(2), "afm_kernel: W must be (A, E)");
  TORCH_CHECK(mask.numel() == 0 || (mask.is_contiguous() && mask.size(0) == V.size(0)),
              "afm_kernel: mask must be empty or a contiguous (B, P) tensor");
}

// The bytes of the ReLU bits afm_forward keeps for afm_backward: one bit per sample, pair and (padded) hidden unit.
int64_t relu_bytes(const at::Tensor& V, int64_t A) {
  const int64_t B = V.size(0), F = V.size(1), P = F * (F - 1) / 2, Ap = round_up(A, kPad);
  return AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "relu_bytes", [&] {
    return ceil_div(B, kLanes<scalar_t>) * P * Ap * int64_t(sizeof(Bits<scalar_t>));
  });
}

}  // namespace

// Returns (out (B, E), weights (B, P), relu); with weights_only, out is empty; with keep_relu, relu holds
// the bits of z > 0 (uint8, opaque: afm_backward's `relu`), else it is empty.
std::vector<at::Tensor> afm_forward(at::Tensor V, at::Tensor W, at::Tensor b, at::Tensor h, at::Tensor mask,
                                    bool weights_only, bool keep_relu) {
  check_inputs(V, W, mask);
  const int64_t B = V.size(0), F = V.size(1), E = V.size(2), A = W.size(0), P = F * (F - 1) / 2;
  at::Tensor weights = at::empty({B, P}, V.options());
  at::Tensor out = at::empty({weights_only ? 0 : B, E}, V.options());
  at::Tensor relu = at::empty({keep_relu ? relu_bytes(V, A) : 0}, V.options().dtype(at::kByte));
  if (P == 0) {   // F < 2: no pairs, nothing pooled
    out.zero_();
    return {out, weights, relu};
  }
  AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "afm_forward", [&] {
    with_block<scalar_t>(V, W, b, h, [&](const auto& block) {
      constexpr int L = kLanes<scalar_t>;
      const int64_t Ep = block.Ep(), Ap = block.Ap();
      const scalar_t* v = V.data_ptr<scalar_t>();
      const scalar_t* m = mask.numel() ? mask.data_ptr<scalar_t>() : nullptr;
      // per block: the pairs' q, z and score rows, then pooling; plus moving the block in and out
      const int64_t rows = P * (Ap + 2) * Ep + 2 * F * Ep + 2 * P;
      at::parallel_for(0, ceil_div(B, L), blocks_per_task(rows), [&](int64_t begin, int64_t end) {
        Rows<scalar_t> vb(F * Ep), wb(P), mb(m ? P : 0), ob(Ep), Q((F - 1) * Ep), c(Ep);
        for (int64_t blk = begin; blk < end; ++blk) {
          const int64_t s0 = blk * L;
          to_lanes<scalar_t>(v, B, F, E, Ep, s0, vb);
          if (keep_relu)
            block.template softmax_weights<true>(vb.data(), wb.data(), Q.data(),
                                                 reinterpret_cast<Bits<scalar_t>*>(relu.data_ptr<uint8_t>()) + blk * P * Ap);
          else
            block.template softmax_weights<false>(vb.data(), wb.data(), Q.data(), nullptr);
          from_lanes<scalar_t>(wb, B, 1, P, P, s0, weights.data_ptr<scalar_t>());
          if (weights_only) continue;
          if (m) to_lanes<scalar_t>(m, B, 1, P, P, s0, mb);
          block.pool(vb.data(), wb.data(), m ? mb.data() : nullptr, ob.data(), c.data());
          from_lanes<scalar_t>(ob, B, 1, E, Ep, s0, out.data_ptr<scalar_t>());
        }
      });
    });
  });
  return {out, weights, relu};
}

// Returns (dV (B, F, E), dW_h = sum dZ'^T q (A, E), db_h = sum dZ' (A)); afm_kernel.py turns the last two
// into the parameters' gradients, as afm_fused does. relu: afm_forward's (keep_relu), or empty: z recomputed.
std::vector<at::Tensor> afm_backward(at::Tensor V, at::Tensor W, at::Tensor b, at::Tensor h, at::Tensor weights,
                                     at::Tensor mask, at::Tensor g, at::Tensor relu) {
  check_inputs(V, W, mask);
  TORCH_CHECK(relu.numel() == 0 || (relu.is_contiguous() && relu.scalar_type() == at::kByte &&
                                    relu.numel() == relu_bytes(V, W.size(0))),
              "afm_kernel: relu must be empty or afm_forward's keep_relu result for these inputs");
  const int64_t B = V.size(0), F = V.size(1), E = V.size(2), A = W.size(0), P = F * (F - 1) / 2;
  g = g.contiguous();
  weights = weights.contiguous();
  at::Tensor dV = P == 0 ? at::zeros_like(V) : at::empty_like(V);   // from_lanes writes every entry
  at::Tensor dW_h = at::zeros({A, E}, V.options());   // sum dZ'^T q
  at::Tensor db_h = at::zeros({A}, V.options());      // sum dZ'
  if (P == 0) return {dV, dW_h, db_h};
  AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "afm_backward", [&] {
    with_block<scalar_t>(V, W, b, h, [&](const auto& block) {
      constexpr int L = kLanes<scalar_t>;
      const int64_t Ep = block.Ep(), Ap = block.Ap();
      const scalar_t* v = V.data_ptr<scalar_t>();
      const scalar_t* m = mask.numel() ? mask.data_ptr<scalar_t>() : nullptr;
      const int64_t blocks = ceil_div(B, L);
      // per block: the pairs' q, z (recomputed), dW, dq and dv rows; plus moving the block in and out
      const int64_t rows = P * (3 * Ap + 4) * Ep + 4 * F * Ep + 3 * P;
      const int64_t per_chunk = std::max({blocks_per_task(rows), ceil_div(kChunkWork * (Ap * Ep + Ap), rows),
                                          ceil_div(blocks, kMaxChunks)});
      const int64_t chunks = ceil_div(blocks, per_chunk);
      // chunk c's sums over its samples: partial_w[c] (Ap * Ep), partial_b[c] (Ap)
      std::vector<scalar_t> partial_w(chunks * Ap * Ep), partial_b(chunks * Ap);
      at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
        Rows<scalar_t> vb(F * Ep), wb(P), mb(m ? P : 0), gb(Ep), dvb(F * Ep), da(P), dW(Ap * Ep), db(Ap),
            Q((F - 1) * Ep), D((F - 1) * Ap), ds(F - 1), ap(F - 1), c(Ep);
        for (int64_t ch = first; ch < last; ++ch) {
          std::fill(dW.begin(), dW.end(), Lanes<scalar_t>{});
          std::fill(db.begin(), db.end(), Lanes<scalar_t>{});
          for (int64_t blk = ch * per_chunk; blk < std::min(blocks, (ch + 1) * per_chunk); ++blk) {
            const int64_t s0 = blk * L;
            to_lanes<scalar_t>(v, B, F, E, Ep, s0, vb);
            to_lanes<scalar_t>(weights.data_ptr<scalar_t>(), B, 1, P, P, s0, wb);
            to_lanes<scalar_t>(g.data_ptr<scalar_t>(), B, 1, E, Ep, s0, gb);   // zero past B: no gradient there
            if (m) to_lanes<scalar_t>(m, B, 1, P, P, s0, mb);
            if (relu.numel())
              block.template backward<true>(vb.data(), wb.data(), m ? mb.data() : nullptr,
                                            reinterpret_cast<const Bits<scalar_t>*>(relu.data_ptr<uint8_t>()) + blk * P * Ap,
                                            gb.data(), dvb.data(), da.data(), dW.data(), db.data(), Q.data(), D.data(),
                                            ds.data(), ap.data(), c.data());
            else
              block.template backward<false>(vb.data(), wb.data(), m ? mb.data() : nullptr, nullptr, gb.data(),
                                             dvb.data(), da.data(), dW.data(), db.data(), Q.data(), D.data(),
                                             ds.data(), ap.data(), c.data());
            from_lanes<scalar_t>(dvb, B, F, E, Ep, s0, dV.data_ptr<scalar_t>());
          }
          lane_sums<scalar_t>(dW.data(), Ap * Ep, partial_w.data() + ch * Ap * Ep);
          lane_sums<scalar_t>(db.data(), Ap, partial_b.data() + ch * Ap);
        }
      });
      scalar_t* total_w = dW_h.data_ptr<scalar_t>();
      scalar_t* total_b = db_h.data_ptr<scalar_t>();
      for (int64_t ch = 0; ch < chunks; ++ch) {   // chunks in order
        for (int64_t a = 0; a < A; ++a)
          for (int64_t e = 0; e < E; ++e) total_w[a * E + e] += partial_w[(ch * Ap + a) * Ep + e];
        for (int64_t a = 0; a < A; ++a) total_b[a] += partial_b[ch * Ap + a];
      }
    });
  });
  return {dV, dW_h, db_h};
}

std::string isa() { return isa_name(); }

// The bytes of one row of lanes, and the multiple E and A are padded to: afm_kernel.py's fake tensors
// size the ReLU bits with them (relu_bytes).
std::vector<int64_t> layout() { return {kVecBytes, kPad}; }

// The namespace is the build's name (torch.ops.<name>), so that two builds (native, avx2) live in one process.
TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("forward(Tensor V, Tensor W, Tensor b, Tensor h, Tensor mask, bool weights_only, bool keep_relu) -> Tensor[]");
  m.def("backward(Tensor V, Tensor W, Tensor b, Tensor h, Tensor weights, Tensor mask, Tensor g, Tensor relu) -> Tensor[]");
  m.def("isa() -> str", &isa);          // the vector ISA this build was compiled for (avx512, avx2, ...)
  m.def("layout() -> int[]", &layout);
}

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CPU, m) {
  m.impl("forward", &afm_forward);
  m.impl("backward", &afm_backward);
}
