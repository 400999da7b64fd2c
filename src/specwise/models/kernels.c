/*
 * CPU kernels for the decoder's hot path.
 *
 * Why they exist: MKL's small-M GEMM on this class of CPU costs 4-6x more for
 * 4 rows than for 1, which makes verification of K drafts expensive, and its
 * results for a row change with the number of rows beside it (so greedy
 * speculative output could drift from plain output on near-ties).
 *
 * Every kernel here computes each output element with one fixed sequence of
 * floating-point operations that does not depend on how many rows are in the
 * call, which rows they are, or how the work is split across threads. So a
 * row's result is bit-identical whether it is computed alone, as one of K+1
 * verify positions, or beside other sequences (batch invariance).
 *
 * Written with GCC vector extensions so that the compiler emits AVX2/FMA on
 * x86 (built with -march=native) and NEON elsewhere.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define NR 16       /* columns in one packed weight panel */
#define PREFETCH 16 /* rows of a panel (64 B each) to prefetch ahead: measured best of 4..64 */

static inline v8 v8_load(const float *p) {
    v8 r;
    memcpy(&r, p, sizeof r);
    return r;
}

static inline void v8_store(float *p, v8 v) { memcpy(p, &v, sizeof v); }

static inline v8 v8_splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }

/* mask ? a : b, for a mask from a vector comparison. */
static inline v8 v8_sel(v8i mask, v8 a, v8 b) {
    return (v8)(((v8i)a & mask) | ((v8i)b & ~mask));
}

/* Fixed-order horizontal sum. */
static inline float v8_sum(v8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* exp(x) for x <= 0 (softmax after max subtraction) and silu; Cephes-style
 * range reduction with a degree-6 polynomial, ~1 ulp on the used range. */
static inline v8 v8_exp(v8 x) {
    const v8 hi = v8_splat(88.3762626647949f), lo = v8_splat(-87.3365478515625f);
    x = v8_sel(x > hi, hi, x);
    x = v8_sel(x < lo, lo, x);
    v8 fx = x * v8_splat(1.44269504088896341f);
    v8 t = fx + v8_splat(0.5f);
    v8 n = __builtin_convertvector(__builtin_convertvector(t, v8i), v8); /* trunc */
    n = v8_sel(n > t, n - v8_splat(1.0f), n);                                  /* floor */
    x = x - n * v8_splat(0.693359375f);
    x = x + n * v8_splat(2.12194440e-4f);
    v8 x2 = x * x;
    v8 y = v8_splat(1.9875691500e-4f);
    y = y * x + v8_splat(1.3981999507e-3f);
    y = y * x + v8_splat(8.3334519073e-3f);
    y = y * x + v8_splat(4.1665795894e-2f);
    y = y * x + v8_splat(1.6666665459e-1f);
    y = y * x + v8_splat(5.0000001201e-1f);
    y = y * x2 + x + v8_splat(1.0f);
    v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
    v8 scale;
    memcpy(&scale, &e, sizeof scale);
    return y * scale;
}

/* ------------------------------------------------------------------------ */
/* Linear: y[M, N] = x[M, K] @ W^T with W packed as [N/NR][K][NR].           */
/* Each y[m, n] is acc = fma(x[m, k], w[n, k], acc) for k = 0..K-1 from 0.    */
/* ------------------------------------------------------------------------ */

#define DEFINE_UKERNEL(MR, NP)                                                       \
    static void ukernel_##MR##_##NP(const float *x, int64_t ldx, const float *w,     \
                                    int64_t K, float *y, int64_t ldy) {              \
        v8 acc[MR][NP][2];                                                           \
        for (int m = 0; m < MR; m++)                                                 \
            for (int p = 0; p < NP; p++) acc[m][p][0] = acc[m][p][1] = v8_splat(0);  \
        for (int64_t k = 0; k < K; k++) {                                            \
            v8 w0[NP], w1[NP];                                                       \
            for (int p = 0; p < NP; p++) {                                           \
                __builtin_prefetch(w + (p * K + k + PREFETCH) * NR);                \
                w0[p] = v8_load(w + (p * K + k) * NR);                               \
                w1[p] = v8_load(w + (p * K + k) * NR + 8);                           \
            }                                                                        \
            for (int m = 0; m < MR; m++) {                                           \
                v8 xb = v8_splat(x[m * ldx + k]);                                    \
                for (int p = 0; p < NP; p++) {                                       \
                    acc[m][p][0] += xb * w0[p];                                      \
                    acc[m][p][1] += xb * w1[p];                                      \
                }                                                                    \
            }                                                                        \
        }                                                                            \
        for (int m = 0; m < MR; m++)                                                 \
            for (int p = 0; p < NP; p++) {                                           \
                v8_store(y + m * ldy + p * NR, acc[m][p][0]);                        \
                v8_store(y + m * ldy + p * NR + 8, acc[m][p][1]);                    \
            }                                                                        \
    }

DEFINE_UKERNEL(1, 4)
DEFINE_UKERNEL(2, 2)
DEFINE_UKERNEL(3, 1)
DEFINE_UKERNEL(4, 1)
DEFINE_UKERNEL(5, 1)
DEFINE_UKERNEL(6, 1)
DEFINE_UKERNEL(1, 1)
DEFINE_UKERNEL(2, 1)

/* Rows [m0, m0 + rows) against the panels [p0, p0 + np) of W. */
static void linear_block(const float *x, int64_t ldx, const float *w, int64_t K, float *y,
                         int64_t ldy, int64_t m0, int64_t rows, int64_t p0, int64_t np) {
    for (int64_t m = m0; m < m0 + rows;) {
        int64_t left = m0 + rows - m;
        const float *xm = x + m * ldx;
        float *ym = y + m * ldy;
        if (left >= 6) {
            for (int64_t p = p0; p < p0 + np; p++)
                ukernel_6_1(xm, ldx, w + p * K * NR, K, ym + p * NR, ldy);
            m += 6;
        } else if (left >= 3) {
            for (int64_t p = p0; p < p0 + np; p++) {
                if (left == 3) ukernel_3_1(xm, ldx, w + p * K * NR, K, ym + p * NR, ldy);
                else if (left == 4) ukernel_4_1(xm, ldx, w + p * K * NR, K, ym + p * NR, ldy);
                else ukernel_5_1(xm, ldx, w + p * K * NR, K, ym + p * NR, ldy);
            }
            m += left;
        } else {
            int64_t p = p0;
            if (left == 1) {
                for (; p + 4 <= p0 + np; p += 4)
                    ukernel_1_4(xm, ldx, w + p * K * NR, K, ym + p * NR, ldy);
                for (; p < p0 + np; p++) ukernel_1_1(xm, ldx, w + p * K * NR, K, ym + p * NR, ldy);
            } else {
                for (; p + 2 <= p0 + np; p += 2)
                    ukernel_2_2(xm, ldx, w + p * K * NR, K, ym + p * NR, ldy);
                for (; p < p0 + np; p++) ukernel_2_1(xm, ldx, w + p * K * NR, K, ym + p * NR, ldy);
            }
            m += left;
        }
    }
}

/* x: [M, K] (row stride ldx), w: packed [N/NR][K][NR], y: [M, N] (row stride ldy).
 * N must be a multiple of NR (the packer pads). Threads split the panels;
 * the split never changes any element's arithmetic. */
void sw_linear(const float *x, int64_t M, int64_t ldx, const float *w, int64_t K, int64_t N,
               float *y, int64_t ldy) {
    int64_t panels = N / NR;
    /* Groups of 4 panels keep the M=1 kernel's 8 accumulators busy; rows are
     * processed in tiles of 60 so a panel group stays in L1/L2 across tiles. */
    int64_t groups = (panels + 3) / 4;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        int64_t p0 = g * 4, np = panels - p0 < 4 ? panels - p0 : 4;
        for (int64_t m0 = 0; m0 < M; m0 += 60) {
            int64_t rows = M - m0 < 60 ? M - m0 : 60;
            linear_block(x, ldx, w, K, y, ldy, m0, rows, p0, np);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, per row.                 */
/* ------------------------------------------------------------------------ */
void sw_rmsnorm(const float *x, int64_t M, int64_t D, const float *weight, float eps, float *y) {
#pragma omp parallel for schedule(static) if (M > 16)
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * D;
        v8 acc = v8_splat(0);
        int64_t d = 0;
        for (; d + 8 <= D; d += 8) {
            v8 v = v8_load(xm + d);
            acc += v * v;
        }
        float ss = v8_sum(acc);
        for (; d < D; d++) ss += xm[d] * xm[d];
        float inv = 1.0f / sqrtf(ss / (float)D + eps);
        for (d = 0; d < D; d++) y[m * D + d] = weight[d] * (xm[d] * inv);
    }
}

/* ------------------------------------------------------------------------ */
/* SwiGLU: out[m, i] = silu(gu[m, i]) * gu[m, F + i] for gu = [gate | up].   */
/* ------------------------------------------------------------------------ */
void sw_silu_mul(const float *gu, int64_t M, int64_t F, float *out) {
#pragma omp parallel for schedule(static) if (M > 16)
    for (int64_t m = 0; m < M; m++) {
        const float *g = gu + m * 2 * F, *u = g + F;
        float *o = out + m * F;
        int64_t i = 0;
        for (; i + 8 <= F; i += 8) {
            v8 gv = v8_load(g + i);
            v8i pos = gv > v8_splat(0);
            v8 e = v8_exp(v8_sel(pos, -gv, gv)); /* exp(-|g|) stays in range */
            v8 sig = v8_sel(pos, v8_splat(1.0f), e) / (v8_splat(1.0f) + e);
            v8_store(o + i, gv * sig * v8_load(u + i));
        }
        for (; i < F; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* ------------------------------------------------------------------------ */
/* RoPE (rotate-half layout) on q and k inside qkv rows, then store k and v   */
/* into the cache at (slot, position).                                        */
/* qkv: [R, (H + 2 Hkv) * D]; cos/sin tables: [max_pos, D/2];                 */
/* kc, vc: [slots, T, Hkv, D] for one layer.                                  */
/* ------------------------------------------------------------------------ */
static inline void rope_head(float *v, const float *c, const float *s, int64_t half) {
    for (int64_t i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
    }
}

void sw_rope_store(float *qkv, int64_t R, int64_t H, int64_t Hkv, int64_t D, const float *cosv,
                   const float *sinv, const int64_t *pos, const int64_t *slot, float *kc, float *vc,
                   int64_t T) {
    int64_t half = D / 2, row = (H + 2 * Hkv) * D;
    for (int64_t r = 0; r < R; r++) {
        float *q = qkv + r * row, *k = q + H * D, *v = k + Hkv * D;
        const float *c = cosv + pos[r] * half, *s = sinv + pos[r] * half;
        for (int64_t h = 0; h < H + Hkv; h++) rope_head(q + h * D, c, s, half);
        float *kd = kc + (slot[r] * T + pos[r]) * Hkv * D;
        float *vd = vc + (slot[r] * T + pos[r]) * Hkv * D;
        memcpy(kd, k, Hkv * D * sizeof(float));
        memcpy(vd, v, Hkv * D * sizeof(float));
    }
}

/* ------------------------------------------------------------------------ */
/* Causal attention for ragged rows: row r attends to cache positions        */
/* 0..pos[r] of its own slot. q: [R, H*D] with row stride ldq; out: [R, H*D]. */
/* ------------------------------------------------------------------------ */
void sw_attention(const float *q, int64_t ldq, int64_t R, int64_t H, int64_t Hkv, int64_t D,
                  const float *kc, const float *vc, int64_t T, const int64_t *pos,
                  const int64_t *slot, float scale, float *out) {
    int64_t group = H / Hkv;
#pragma omp parallel
    {
        float *scores = malloc(sizeof(float) * (T + 8));
#pragma omp for schedule(dynamic, 1)
        for (int64_t rh = 0; rh < R * H; rh++) {
            int64_t r = rh / H, h = rh % H, g = h / group, n = pos[r] + 1;
            const float *qh = q + r * ldq + h * D;
            const float *kb = kc + slot[r] * T * Hkv * D + g * D;
            const float *vb = vc + slot[r] * T * Hkv * D + g * D;
            int64_t stride = Hkv * D;
            float mx = -INFINITY;
            for (int64_t t = 0; t < n; t++) {
                const float *kt = kb + t * stride;
                v8 a0 = v8_splat(0), a1 = v8_splat(0);
                int64_t d = 0;
                for (; d + 16 <= D; d += 16) {
                    a0 += v8_load(qh + d) * v8_load(kt + d);
                    a1 += v8_load(qh + d + 8) * v8_load(kt + d + 8);
                }
                float sc = v8_sum(a0 + a1);
                for (; d < D; d++) sc += qh[d] * kt[d];
                sc *= scale;
                scores[t] = sc;
                mx = sc > mx ? sc : mx;
            }
            for (int64_t t = n; t < ((n + 7) & ~(int64_t)7); t++) scores[t] = -INFINITY;
            v8 sumv = v8_splat(0);
            for (int64_t t = 0; t < n; t += 8) {
                v8 e = v8_exp(v8_load(scores + t) - v8_splat(mx));
                e = v8_sel(v8_load(scores + t) == v8_splat(-INFINITY), v8_splat(0), e);
                v8_store(scores + t, e);
                sumv += e;
            }
            float inv = 1.0f / v8_sum(sumv);
            float *o = out + r * H * D + h * D;
            for (int64_t d0 = 0; d0 < D; d0 += 64) { /* D % 8 == 0 (checked at load) */
                int64_t nv = (D - d0 < 64 ? D - d0 : 64) / 8;
                v8 acc[8];
                for (int j = 0; j < 8; j++) acc[j] = v8_splat(0);
                for (int64_t t = 0; t < n; t++) {
                    const float *vt = vb + t * stride + d0;
                    v8 p = v8_splat(scores[t]);
                    for (int j = 0; j < nv; j++) acc[j] += p * v8_load(vt + 8 * j);
                }
                for (int j = 0; j < nv; j++) v8_store(o + d0 + 8 * j, acc[j] * v8_splat(inv));
            }
        }
        free(scores);
    }
}
