// AFM's pair products + attention pooling on the CPU, samples as SIMD lanes: see afm_kernel.py for why.
//
// A block of L samples is transposed to (F, E, L), so that every per-sample quantity (one pair's q, z,
// score, gradient) is a row of L lanes and every operation is a plain vector operation with the shared
// attention parameters broadcast: no gathers, no horizontal sums, no tails inside a sample. One block's
// scores (P, L) stay in L1/L2; nothing of size (B, P, E) or (B, P, A) is ever written to memory.
//
// Pairs are p = (i, j), i < j, row-major (torch.triu_indices(F, F, 1)), as in the reference.
// Tensors: V (B, F, E), W (A, E), b (A), h (A), mask (B, P) or empty (no dropout), g (B, E).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kMaxGeneric = 64;   // E and A of the run-time-sized kernel (afm_kernel.py checks)

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

// blocks per task (or chunk) for blocks costing about rows_per_block vector-row operations each
int64_t blocks_per_task(int64_t rows_per_block) {
  return std::max<int64_t>(1, ceil_div(kTaskRows, std::max<int64_t>(1, rows_per_block)));
}

// One row of L lanes (L samples), a 64-byte GCC vector: the compiler maps it onto whatever vector
// registers -march=native has, and arithmetic on it is element-wise.
template <typename T>
struct LanesOf;
template <>
struct LanesOf<float> { typedef float type __attribute__((vector_size(64), __may_alias__)); };
template <>
struct LanesOf<double> { typedef double type __attribute__((vector_size(64), __may_alias__)); };
template <typename T>
using Lanes = typename LanesOf<T>::type;

// Lane indices for GCC's __builtin_shuffle: integers of the lanes' width, as many as there are lanes.
template <typename T>
struct MaskOf;
template <>
struct MaskOf<float> { typedef int32_t type __attribute__((vector_size(64))); };
template <>
struct MaskOf<double> { typedef int64_t type __attribute__((vector_size(64))); };

// out[k] = the sum of rows[k]'s lanes, k < n, always added up in one order, a pairwise tree of neighbours:
// ((l0 + l1) + (l2 + l3)) + ... L rows at a time go as L vectors: each step adds the neighbouring lanes of
// two vectors into one (half the lanes from each), and after log2(L) steps lane k holds row k's sum.
template <typename T>
void lane_sums(const Lanes<T>* __restrict__ rows, int64_t n, T* __restrict__ out) {
  constexpr int L = sizeof(Lanes<T>) / sizeof(T);
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

// E_, A_ > 0 are compile-time sizes (loops unrolled, rows kept in registers), 0 means run-time.
template <typename T, int E_, int A_>
struct Block {
  using R = Lanes<T>;
  static constexpr int64_t EM = E_ > 0 ? E_ : kMaxGeneric, AM = A_ > 0 ? A_ : kMaxGeneric;
  int64_t F, P, E, A;
  const T* __restrict__ W;    // (A, E)
  const T* __restrict__ b;    // (A)
  const T* __restrict__ h;    // (A)
  const T* __restrict__ Wh;   // (A, E): h[a] W[a]

  int64_t En() const { return E_ > 0 ? E_ : E; }
  int64_t An() const { return A_ > 0 ? A_ : A; }

  // q = vi * vj and z = W q + b, every lane at once.
  void hidden(const R* __restrict__ vi, const R* __restrict__ vj, R* __restrict__ q, R* __restrict__ z) const {
    const int64_t En_ = En(), An_ = An();
#pragma GCC unroll 16
    for (int64_t e = 0; e < En_; ++e) q[e] = vi[e] * vj[e];
#pragma GCC unroll 16
    for (int64_t a = 0; a < An_; ++a) z[a] = R{} + b[a];
#pragma GCC unroll 16
    for (int64_t e = 0; e < En_; ++e)            // e outer: the A accumulators are independent
#pragma GCC unroll 16
      for (int64_t a = 0; a < An_; ++a) z[a] += W[a * En_ + e] * q[e];
  }

  // weights (P rows) <- softmax over pairs of h . relu(z), for the block v (F·E rows)
  void softmax_weights(const R* __restrict__ v, R* __restrict__ weights) const {
    const int64_t En_ = En(), An_ = An();
    R q[EM], z[AM], top{};
    int64_t p = 0;
    for (int64_t i = 0; i < F; ++i)
      for (int64_t j = i + 1; j < F; ++j, ++p) {
        hidden(v + i * En_, v + j * En_, q, z);
        R s{};
#pragma GCC unroll 16
        for (int64_t a = 0; a < An_; ++a) s += h[a] * (z[a] > 0 ? z[a] : R{});
        weights[p] = s;
        top = p == 0 ? s : (s > top ? s : top);
      }
    R total{};
    for (p = 0; p < P; ++p) {
      R x = weights[p] - top;
      for (int l = 0; l < int(sizeof(R) / sizeof(T)); ++l) x[l] = std::exp(x[l]);
      weights[p] = x;
      total += x;
    }
    const R inverse = T(1) / total;
    for (p = 0; p < P; ++p) weights[p] *= inverse;
  }

  // out (E rows) = sum_p a_p q_p = sum_i v_i * (sum_{j>i} a_ij v_j), a = w * mask
  void pool(const R* __restrict__ v, const R* __restrict__ weights, const R* __restrict__ mask,
            R* __restrict__ out) const {
    const int64_t En_ = En();
    R partial[EM];
    for (int64_t e = 0; e < En_; ++e) out[e] = R{};
    int64_t p = 0;
    for (int64_t i = 0; i < F; ++i) {
      for (int64_t e = 0; e < En_; ++e) partial[e] = R{};
      for (int64_t j = i + 1; j < F; ++j, ++p) {
        const R ap = mask ? weights[p] * mask[p] : weights[p];
#pragma GCC unroll 16
        for (int64_t e = 0; e < En_; ++e) partial[e] += ap * v[j * En_ + e];
      }
      for (int64_t e = 0; e < En_; ++e) out[e] += v[i * En_ + e] * partial[e];
    }
  }

  // dv (F·E rows) written; dW_acc (A·E rows) += dZ' q; db_acc (A rows) += dZ'; da (P rows) is scratch.
  // Algebra (afm_fused.py): dw_p = m_p g.q_p, ds_p = w_p (dw_p - sum_r w_r dw_r), dZ'_pa = ds_p [z_pa > 0],
  // dq_p = dZ'_p (h W) + a_p g, dv_i += dq_p v_j, dv_j += dq_p v_i.
  void backward(const R* __restrict__ v, const R* __restrict__ weights, const R* __restrict__ mask,
                const R* __restrict__ g, R* __restrict__ dv, R* __restrict__ da, R* __restrict__ dW_acc,
                R* __restrict__ db_acc) const {
    const int64_t En_ = En(), An_ = An();
    R q[EM], z[AM], dq[EM], gv[EM], weighted{};
    int64_t p = 0;
    for (int64_t i = 0; i < F; ++i) {
      for (int64_t e = 0; e < En_; ++e) gv[e] = g[e] * v[i * En_ + e];
      for (int64_t j = i + 1; j < F; ++j, ++p) {
        R d{};
#pragma GCC unroll 16
        for (int64_t e = 0; e < En_; ++e) d += gv[e] * v[j * En_ + e];
        if (mask) d *= mask[p];
        da[p] = d;
        weighted += weights[p] * d;
      }
    }
    for (int64_t k = 0; k < F * En_; ++k) dv[k] = R{};
    p = 0;
    for (int64_t i = 0; i < F; ++i) {
      const R* vi = v + i * En_;
      R* dvi = dv + i * En_;
      for (int64_t j = i + 1; j < F; ++j, ++p) {
        const R* vj = v + j * En_;
        R* dvj = dv + j * En_;
        const R ds = weights[p] * (da[p] - weighted);
        const R ap = mask ? weights[p] * mask[p] : weights[p];
        hidden(vi, vj, q, z);
#pragma GCC unroll 16
        for (int64_t e = 0; e < En_; ++e) dq[e] = ap * g[e];
#pragma GCC unroll 16
        for (int64_t a = 0; a < An_; ++a) {
          const R dz = z[a] > 0 ? ds : R{};
          db_acc[a] += dz;
          R* dWa = dW_acc + a * En_;
#pragma GCC unroll 16
          for (int64_t e = 0; e < En_; ++e) {
            dWa[e] += dz * q[e];
            dq[e] += Wh[a * En_ + e] * dz;
          }
        }
#pragma GCC unroll 16
        for (int64_t e = 0; e < En_; ++e) {
          dvi[e] += dq[e] * vj[e];
          dvj[e] += dq[e] * vi[e];
        }
      }
    }
  }
};

template <typename T>
using Rows = std::vector<Lanes<T>>;   // zero-initialised, 64-byte aligned

// samples [s0, s0 + L) of a (B, R) tensor -> R rows of L lanes, zero past B
template <typename T, int L>
void to_lanes(const T* src, int64_t B, int64_t R, int64_t s0, Rows<T>& dst) {
  for (int l = 0; l < L; ++l) {
    const int64_t s = s0 + l;
    for (int64_t r = 0; r < R; ++r) dst[r][l] = s < B ? src[s * R + r] : T(0);
  }
}

template <typename T, int L>
void from_lanes(const Rows<T>& src, int64_t B, int64_t R, int64_t s0, T* dst) {
  for (int l = 0; l < L && s0 + l < B; ++l)
    for (int64_t r = 0; r < R; ++r) dst[(s0 + l) * R + r] = src[r][l];
}

template <typename T, typename Run>
void with_block(const at::Tensor& V, const at::Tensor& W, const at::Tensor& b, const at::Tensor& h,
                const Run& run) {
  const int64_t F = V.size(1), E = V.size(2), A = W.size(0);
  TORCH_CHECK(E <= kMaxGeneric && A <= kMaxGeneric, "afm_kernel: E and A must be <= ", kMaxGeneric);
  const at::Tensor Wc = W.contiguous(), bc = b.contiguous(), hc = h.contiguous();
  const at::Tensor Wh = (h.unsqueeze(1) * W).contiguous();
  const int64_t P = F * (F - 1) / 2;
  if (E == 16 && A == 16) {
    run(Block<T, 16, 16>{F, P, E, A, Wc.data_ptr<T>(), bc.data_ptr<T>(), hc.data_ptr<T>(), Wh.data_ptr<T>()});
  } else {
    run(Block<T, 0, 0>{F, P, E, A, Wc.data_ptr<T>(), bc.data_ptr<T>(), hc.data_ptr<T>(), Wh.data_ptr<T>()});
  }
}

void check_inputs(const at::Tensor& V, const at::Tensor& W, const at::Tensor& mask) {
  TORCH_CHECK(V.device().is_cpu() && V.dim() == 3 && V.is_contiguous(),
              "afm_kernel: V must be a contiguous CPU (B, F, E) tensor");
  TORCH_CHECK(W.dim() == 2 && W.size(1) == V.size(2), "afm_kernel: W must be (A, E)");
  TORCH_CHECK(mask.numel() == 0 || (mask.is_contiguous() && mask.size(0) == V.size(0)),
              "afm_kernel: mask must be empty or a contiguous (B, P) tensor");
}

}  // namespace

// Returns (out (B, E), weights (B, P)); with weights_only, out is empty.
std::vector<at::Tensor> afm_forward(at::Tensor V, at::Tensor W, at::Tensor b, at::Tensor h, at::Tensor mask,
                                    bool weights_only) {
  check_inputs(V, W, mask);
  const int64_t B = V.size(0), F = V.size(1), E = V.size(2), A = W.size(0), P = F * (F - 1) / 2;
  at::Tensor weights = at::empty({B, P}, V.options());
  at::Tensor out = at::empty({weights_only ? 0 : B, E}, V.options());
  AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "afm_forward", [&] {
    with_block<scalar_t>(V, W, b, h, [&](const auto& block) {
      constexpr int L = 64 / sizeof(scalar_t);
      const scalar_t* v = V.data_ptr<scalar_t>();
      const scalar_t* m = mask.numel() ? mask.data_ptr<scalar_t>() : nullptr;
      // per block: the pairs' q, z and score rows, then pooling; plus moving the block in and out
      const int64_t rows = P * (A + 2) * E + 2 * F * E + 2 * P;
      at::parallel_for(0, ceil_div(B, L), blocks_per_task(rows), [&](int64_t begin, int64_t end) {
        Rows<scalar_t> vb(F * E), wb(P), mb(m ? P : 0), ob(E);
        for (int64_t blk = begin; blk < end; ++blk) {
          const int64_t s0 = blk * L;
          to_lanes<scalar_t, L>(v, B, F * E, s0, vb);
          block.softmax_weights(vb.data(), wb.data());
          from_lanes<scalar_t, L>(wb, B, P, s0, weights.data_ptr<scalar_t>());
          if (weights_only) continue;
          if (m) to_lanes<scalar_t, L>(m, B, P, s0, mb);
          block.pool(vb.data(), wb.data(), m ? mb.data() : nullptr, ob.data());
          from_lanes<scalar_t, L>(ob, B, E, s0, out.data_ptr<scalar_t>());
        }
      });
    });
  });
  return {out, weights};
}

// Returns (dV (B, F, E), dW_h = sum dZ'^T q (A, E), db_h = sum dZ' (A)); afm_kernel.py turns the last two
// into the parameters' gradients, as afm_fused does.
std::vector<at::Tensor> afm_backward(at::Tensor V, at::Tensor W, at::Tensor b, at::Tensor h, at::Tensor weights,
                                     at::Tensor mask, at::Tensor g) {
  check_inputs(V, W, mask);
  const int64_t B = V.size(0), F = V.size(1), E = V.size(2), A = W.size(0), P = F * (F - 1) / 2;
  g = g.contiguous();
  weights = weights.contiguous();
  at::Tensor dV = at::empty_like(V);
  at::Tensor dW_h = at::zeros({A, E}, V.options());   // sum dZ'^T q
  at::Tensor db_h = at::zeros({A}, V.options());      // sum dZ'
  AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "afm_backward", [&] {
    with_block<scalar_t>(V, W, b, h, [&](const auto& block) {
      constexpr int L = 64 / sizeof(scalar_t);
      const scalar_t* v = V.data_ptr<scalar_t>();
      const scalar_t* m = mask.numel() ? mask.data_ptr<scalar_t>() : nullptr;
      const int64_t blocks = ceil_div(B, L);
      // per block: the pairs' q, z (recomputed), dW, dq and dv rows; plus moving the block in and out
      const int64_t rows = P * (3 * A + 4) * E + 4 * F * E + 3 * P;
      const int64_t per_chunk = std::max({blocks_per_task(rows), ceil_div(kChunkWork * (A * E + A), rows),
                                          ceil_div(blocks, kMaxChunks)});
      const int64_t chunks = ceil_div(blocks, per_chunk);
      // chunk c's sums over its samples: partial_w[c] (A * E), partial_b[c] (A)
      std::vector<scalar_t> partial_w(chunks * A * E), partial_b(chunks * A);
      at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
        Rows<scalar_t> vb(F * E), wb(P), mb(m ? P : 0), gb(E), dvb(F * E), da(P), dW(A * E), db(A);
        for (int64_t c = first; c < last; ++c) {
          std::fill(dW.begin(), dW.end(), Lanes<scalar_t>{});
          std::fill(db.begin(), db.end(), Lanes<scalar_t>{});
          for (int64_t blk = c * per_chunk; blk < std::min(blocks, (c + 1) * per_chunk); ++blk) {
            const int64_t s0 = blk * L;
            to_lanes<scalar_t, L>(v, B, F * E, s0, vb);
            to_lanes<scalar_t, L>(weights.data_ptr<scalar_t>(), B, P, s0, wb);
            to_lanes<scalar_t, L>(g.data_ptr<scalar_t>(), B, E, s0, gb);   // zero past B: no gradient there
            if (m) to_lanes<scalar_t, L>(m, B, P, s0, mb);
            block.backward(vb.data(), wb.data(), m ? mb.data() : nullptr, gb.data(), dvb.data(), da.data(),
                           dW.data(), db.data());
            from_lanes<scalar_t, L>(dvb, B, F * E, s0, dV.data_ptr<scalar_t>());
          }
          lane_sums<scalar_t>(dW.data(), A * E, partial_w.data() + c * A * E);
          lane_sums<scalar_t>(db.data(), A, partial_b.data() + c * A);
        }
      });
      scalar_t* total_w = dW_h.data_ptr<scalar_t>();
      scalar_t* total_b = db_h.data_ptr<scalar_t>();
      for (int64_t c = 0; c < chunks; ++c) {   // chunks in order
        for (int64_t k = 0; k < A * E; ++k) total_w[k] += partial_w[c * A * E + k];
        for (int64_t a = 0; a < A; ++a) total_b[a] += partial_b[c * A + a];
      }
    });
  });
  return {dV, dW_h, db_h};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &afm_forward, "AFM pooling forward (CPU)", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &afm_backward, "AFM pooling backward (CPU)", py::call_guard<py::gil_scoped_release>());
}
