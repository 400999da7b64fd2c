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
#ifdef __AVX2__
#include <immintrin.h>
#endif

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
 * the split never changes any element's arithmetic. The *_work functions share
 * their loops among the threads of an enclosing parallel region (serial outside one). */
static void linear_work(const float *x, int64_t M, int64_t ldx, const float *w, int64_t K, int64_t N,
                        float *y, int64_t ldy) {
    int64_t panels = N / NR;
    /* Groups of 4 panels keep the M=1 kernel's 8 accumulators busy; rows are
     * processed in tiles of 60 so a panel group stays in L1/L2 across tiles. */
    int64_t groups = (panels + 3) / 4;
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        int64_t p0 = g * 4, np = panels - p0 < 4 ? panels - p0 : 4;
        for (int64_t m0 = 0; m0 < M; m0 += 60) {
            int64_t rows = M - m0 < 60 ? M - m0 : 60;
            linear_block(x, ldx, w, K, y, ldy, m0, rows, p0, np);
        }
    }
}

void sw_linear(const float *x, int64_t M, int64_t ldx, const float *w, int64_t K, int64_t N,
               float *y, int64_t ldy) {
#pragma omp parallel
    linear_work(x, M, ldx, w, K, N, y, ldy);
}

/* ------------------------------------------------------------------------ */
/* Quantized linear: W kept in GGUF's block formats (32 weights along K per  */
/* block), repacked by panel so one block of a panel dequantizes to 32 rows  */
/* of 16 floats: the layout the fp32 micro-kernels read.                     */
/*                                                                          */
/*   panel p, block b:  d[16] fp32 scales, (Q4_1) m[16] fp32 minimums,       */
/*                      32 k-rows of quants: Q8_0 16 int8; Q4_* 8 bytes, byte */
/*                      j = column j (low nibble) | column j + 8 (high).      */
/*   w = d * q (Q8_0), d * (q - 8) (Q4_0), d * q + m (Q4_1).                  */
/*                                                                          */
/* d * q is exact in fp32 (11-bit scale times an 8-bit integer), so each     */
/* weight equals gguf's own dequantization bit for bit, and every output     */
/* element runs the fp32 kernel's fma sequence over the same values: the     */
/* quantized and fp32 paths give identical logits, alone or batched.         */
/* Each call dequantizes a panel group once and reuses it for every row.     */
/* ------------------------------------------------------------------------ */
#define QK 32
#define QPREFETCH 4 /* blocks ahead to prefetch */
enum { Q8_0 = 0, Q4_0 = 1, Q4_1 = 2 };

typedef uint8_t v8u8 __attribute__((vector_size(8)));
typedef int8_t v8s8 __attribute__((vector_size(8)));

/* 8 bytes -> 8 int32 lanes (one vpmovzxbd / vpmovsxbd: GCC's generic
 * conversion of byte vectors goes through scalar registers). */
static inline v8i v8i_from_u8(const uint8_t *p) {
#ifdef __AVX2__
    return (v8i)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
#else
    v8u8 b;
    memcpy(&b, p, 8);
    return __builtin_convertvector(b, v8i);
#endif
}

static inline v8i v8i_from_s8(const uint8_t *p) {
#ifdef __AVX2__
    return (v8i)_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
#else
    v8s8 b;
    memcpy(&b, p, 8);
    return __builtin_convertvector(b, v8i);
#endif
}

static inline int64_t qblock_bytes(int qtype) {
    return qtype == Q8_0 ? 64 + QK * 16 : qtype == Q4_0 ? 64 + QK * 8 : 128 + QK * 8;
}

/* One block of one panel -> out[QK][NR] (row stride NR): gguf's dequantization. */
static inline void dequant_block(const uint8_t *blk, int qtype, float *out) {
    v8 d0 = v8_load((const float *)blk), d1 = v8_load((const float *)blk + 8);
    if (qtype == Q8_0) {
        const uint8_t *q = blk + 64;
        for (int k = 0; k < QK; k++, q += 16) {
            v8_store(out + k * NR, __builtin_convertvector(v8i_from_s8(q), v8) * d0);
            v8_store(out + k * NR + 8, __builtin_convertvector(v8i_from_s8(q + 8), v8) * d1);
        }
        return;
    }
    v8 m0, m1;
    if (qtype == Q4_1) {
        m0 = v8_load((const float *)blk + 16);
        m1 = v8_load((const float *)blk + 24);
    } else { /* d * (q - 8) = d * q + (-8 d), and -8 d is exact */
        m0 = d0 * v8_splat(-8.0f);
        m1 = d1 * v8_splat(-8.0f);
    }
    const uint8_t *q = blk + (qtype == Q4_1 ? 128 : 64);
    for (int k = 0; k < QK; k++, q += 8) {
        v8i v = v8i_from_u8(q);
        v8 lo = __builtin_convertvector(v & 15, v8), hi = __builtin_convertvector(v >> 4, v8);
        v8_store(out + k * NR, lo * d0 + m0);
        v8_store(out + k * NR + 8, hi * d1 + m1);
    }
}

/* The 16 quants of k-row `k` of a block, as floats (Q4_0 unshifted: the -8 is
 * folded into the block's minimum). */
static inline void quant_row(const uint8_t *q, int qtype, int k, v8 *lo, v8 *hi) {
    if (qtype == Q8_0) {
        *lo = __builtin_convertvector(v8i_from_s8(q + k * 16), v8);
        *hi = __builtin_convertvector(v8i_from_s8(q + k * 16 + 8), v8);
    } else {
        v8i v = v8i_from_u8(q + k * 8);
        *lo = __builtin_convertvector(v & 15, v8);
        *hi = __builtin_convertvector(v >> 4, v8);
    }
}

/* MR rows x NP panels straight from the blocks. Per output element and block b:
 *   t = sum_k fma(x[k], q[k], t) from 0 over the block's 32 k in order,
 *   y = fma(d, t, y), then (Q4_*) y = fma(m, sx[b], y), sx[b] = the row's sum over the block,
 * for b = 0.. in order from y = 0: one sequence whatever MR, NP or the rows beside it.
 * The quants of a k-row are converted once and used by all MR rows. */
#define DEFINE_QUKERNEL(QT, MR, NP)                                                               \
    static void qukernel_##QT##_##MR##_##NP(const float *x, int64_t ldx, const float *sx,         \
                                            int64_t ldsx, const uint8_t *w, int64_t K, float *y,  \
                                            int64_t ldy) {                                         \
        const int qtype = QT; /* a constant: each format gets its own unrolled code */            \
        int64_t nb = K / QK, bb = qblock_bytes(qtype), qoff = qtype == Q4_1 ? 128 : 64;          \
        v8 yacc[MR][NP][2];                                                                       \
        for (int m = 0; m < MR; m++)                                                              \
            for (int p = 0; p < NP; p++) yacc[m][p][0] = yacc[m][p][1] = v8_splat(0);             \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            v8 t[MR][NP][2];                                                                      \
            for (int m = 0; m < MR; m++)                                                          \
                for (int p = 0; p < NP; p++) t[m][p][0] = t[m][p][1] = v8_splat(0);               \
            const uint8_t *blk[NP];                                                               \
            for (int p = 0; p < NP; p++) {                                                        \
                blk[p] = w + (p * nb + b) * bb;                                                   \
                for (int64_t c = 0; c < bb; c += 64) __builtin_prefetch(blk[p] + QPREFETCH * bb + c); \
            }                                                                                     \
            for (int k = 0; k < QK; k++) {                                                        \
                v8 lo[NP], hi[NP];                                                                \
                for (int p = 0; p < NP; p++) quant_row(blk[p] + qoff, qtype, k, &lo[p], &hi[p]);  \
                for (int m = 0; m < MR; m++) {                                                    \
                    v8 xb = v8_splat(x[m * ldx + b * QK + k]);                                    \
                    for (int p = 0; p < NP; p++) {                                                \
                        t[m][p][0] += xb * lo[p];                                                 \
                        t[m][p][1] += xb * hi[p];                                                 \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
            for (int p = 0; p < NP; p++) {                                                        \
                const float *s = (const float *)blk[p];                                           \
                v8 d0 = v8_load(s), d1 = v8_load(s + 8);                                          \
                for (int m = 0; m < MR; m++) {                                                    \
                    yacc[m][p][0] += d0 * t[m][p][0];                                             \
                    yacc[m][p][1] += d1 * t[m][p][1];                                             \
                }                                                                                 \
                if (qtype != Q8_0) {                                                              \
                    v8 m0, m1;                                                                    \
                    if (qtype == Q4_1) m0 = v8_load(s + 16), m1 = v8_load(s + 24);                \
                    else m0 = d0 * v8_splat(-8.0f), m1 = d1 * v8_splat(-8.0f);                    \
                    for (int m = 0; m < MR; m++) {                                                \
                        v8 sb = v8_splat(sx[m * ldsx + b]);                                       \
                        yacc[m][p][0] += m0 * sb;                                                 \
                        yacc[m][p][1] += m1 * sb;                                                 \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (int m = 0; m < MR; m++)                                                              \
            for (int p = 0; p < NP; p++) {                                                        \
                v8_store(y + m * ldy + p * NR, yacc[m][p][0]);                                    \
                v8_store(y + m * ldy + p * NR + 8, yacc[m][p][1]);                                \
            }                                                                                     \
    }

#define DEFINE_QUKERNELS(QT)                                                                      \
    DEFINE_QUKERNEL(QT, 1, 4)                                                                     \
    DEFINE_QUKERNEL(QT, 2, 2)                                                                     \
    DEFINE_QUKERNEL(QT, 1, 1)                                                                     \
    DEFINE_QUKERNEL(QT, 2, 1)                                                                     \
    DEFINE_QUKERNEL(QT, 3, 1)                                                                     \
    DEFINE_QUKERNEL(QT, 4, 1)                                                                     \
    DEFINE_QUKERNEL(QT, 5, 1)                                                                     \
    DEFINE_QUKERNEL(QT, 6, 1)
DEFINE_QUKERNELS(Q8_0)
DEFINE_QUKERNELS(Q4_0)
DEFINE_QUKERNELS(Q4_1)

typedef void (*qukernel_fn)(const float *, int64_t, const float *, int64_t, const uint8_t *,
                            int64_t, float *, int64_t);
/* [format][shape]: shapes 1..6 are MR rows x 1 panel, 7 is 1 x 4, 8 is 2 x 2. */
#define QUKERNEL_ROW(QT)                                                                          \
    {0, qukernel_##QT##_1_1, qukernel_##QT##_2_1, qukernel_##QT##_3_1, qukernel_##QT##_4_1,      \
     qukernel_##QT##_5_1, qukernel_##QT##_6_1, qukernel_##QT##_1_4, qukernel_##QT##_2_2}
static const qukernel_fn QUKERNELS[3][9] = {QUKERNEL_ROW(Q8_0), QUKERNEL_ROW(Q4_0), QUKERNEL_ROW(Q4_1)};

/* Block sums of each row (fixed order), for the minimums of Q4_0 and Q4_1. Every
 * thread computes them all for itself: cheaper than a barrier. */
static void block_sums(const float *x, int64_t M, int64_t ldx, int64_t K, float *sx) {
    int64_t nb = K / QK;
    for (int64_t m = 0; m < M; m++)
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = x + m * ldx + b * QK;
            v8 acc = v8_load(xb) + v8_load(xb + 8) + (v8_load(xb + 16) + v8_load(xb + 24));
            sx[m * nb + b] = v8_sum(acc);
        }
}

/* As linear_work, with w the repacked blocks of N/NR panels; K a multiple of QK;
 * sx: this thread's scratch of M * K / QK floats. Rows go in tiles of up to 6 (a verify step's
 * K + 1 rows in one tile, so its quants are unpacked once). */
static void qlinear_work(const float *x, int64_t M, int64_t ldx, const uint8_t *w, int qtype,
                         int64_t K, int64_t N, float *y, int64_t ldy, float *sx) {
    int64_t panels = N / NR, groups = (panels + 3) / 4, nb = K / QK, bb = qblock_bytes(qtype);
    int64_t pstride = nb * bb;
    if (qtype == Q8_0) sx = NULL;
    else block_sums(x, M, ldx, K, sx);
    const qukernel_fn *fn = QUKERNELS[qtype];
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        int64_t p0 = g * 4, np = panels - p0 < 4 ? panels - p0 : 4;
        for (int64_t m = 0; m < M;) {
            int64_t rows = M - m >= 6 ? 6 : M - m;
            const float *xm = x + m * ldx, *sm = sx ? sx + m * nb : NULL;
            float *ym = y + m * ldy;
            int64_t p = p0;
            if (rows == 1)
                for (; p + 4 <= p0 + np; p += 4) fn[7](xm, ldx, sm, nb, w + p * pstride, K, ym + p * NR, ldy);
            else if (rows == 2)
                for (; p + 2 <= p0 + np; p += 2) fn[8](xm, ldx, sm, nb, w + p * pstride, K, ym + p * NR, ldy);
            for (; p < p0 + np; p++) fn[rows](xm, ldx, sm, nb, w + p * pstride, K, ym + p * NR, ldy);
            m += rows;
        }
    }
}

void sw_qlinear(const float *x, int64_t M, int64_t ldx, const uint8_t *w, int qtype, int64_t K,
                int64_t N, float *y, int64_t ldy) {
#pragma omp parallel
    {
        float *sx = malloc((size_t)(M * (K / QK)) * sizeof(float));
        qlinear_work(x, M, ldx, w, qtype, K, N, y, ldy, sx);
        free(sx);
    }
}

/* Rows ids[i] of W (columns of the packed panels) -> out[n][K], for the embedding
 * lookup of a tied head and for trimmed draft heads. */
void sw_qrows(const uint8_t *w, int qtype, int64_t K, const int64_t *ids, int64_t n, float *out) {
    int64_t nb = K / QK, bb = qblock_bytes(qtype);
#pragma omp parallel for schedule(static) if (n > 64)
    for (int64_t i = 0; i < n; i++) {
        int64_t p = ids[i] / NR, j = ids[i] % NR;
        float tile[QK * NR];
        for (int64_t b = 0; b < nb; b++) {
            dequant_block(w + (p * nb + b) * bb, qtype, tile);
            for (int k = 0; k < QK; k++) out[i * K + b * QK + k] = tile[k * NR + j];
        }
    }
}

/* ------------------------------------------------------------------------ */
/* RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, per row.                 */
/* ------------------------------------------------------------------------ */
static void rmsnorm_row(const float *xm, int64_t D, const float *weight, float eps, float *ym) {
    v8 acc = v8_splat(0);
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
        v8 v = v8_load(xm + d);
        acc += v * v;
    }
    float ss = v8_sum(acc);
    for (; d < D; d++) ss += xm[d] * xm[d];
    float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (d = 0; d < D; d++) ym[d] = weight[d] * (xm[d] * inv);
}

static void rmsnorm_work(const float *x, int64_t M, int64_t D, const float *weight, float eps, float *y) {
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; m++) rmsnorm_row(x + m * D, D, weight, eps, y + m * D);
}

/* x += r (the residual branch), then y = rmsnorm(x): one pass, one barrier. */
static void add_rmsnorm_work(float *x, const float *r, int64_t M, int64_t D, const float *weight, float eps, float *y) {
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        for (int64_t d = 0; d < D; d++) x[m * D + d] += r[m * D + d];
        if (weight) rmsnorm_row(x + m * D, D, weight, eps, y + m * D);
    }
}

void sw_rmsnorm(const float *x, int64_t M, int64_t D, const float *weight, float eps, float *y) {
#pragma omp parallel if (M > 16)
    rmsnorm_work(x, M, D, weight, eps, y);
}

/* ------------------------------------------------------------------------ */
/* SwiGLU: out[m, i] = silu(gu[m, i]) * gu[m, F + i] for gu = [gate | up].   */
/* ------------------------------------------------------------------------ */
static void silu_mul_work(const float *gu, int64_t M, int64_t F, float *out) {
#pragma omp for schedule(static)
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

void sw_silu_mul(const float *gu, int64_t M, int64_t F, float *out) {
#pragma omp parallel if (M > 16)
    silu_mul_work(gu, M, F, out);
}

/* ------------------------------------------------------------------------ */
/* KV cache layout, per layer:                                                */
/*   keys   [slots][Hkv][T/KB][D][KB]  (blocks of KB positions, transposed,   */
/*          so the scores of KB keys are vertical FMAs over d);               */
/*   values [slots][Hkv][T][D].                                               */
/* T (positions per slot) is a multiple of KB.                                */
/* ------------------------------------------------------------------------ */
#define KB 16

static inline float *key_at(float *kc, int64_t slot, int64_t g, int64_t t, int64_t Hkv,
                            int64_t D, int64_t T) {
    return kc + ((slot * Hkv + g) * (T / KB) + t / KB) * D * KB + t % KB;
}

/* RoPE (rotate-half layout) on q and k inside qkv rows, then store k and v
 * into the cache at (slot, position). qkv: [R, (H + 2 Hkv) * D];
 * cos/sin tables: [max_pos, D/2]. */
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
        for (int64_t g = 0; g < Hkv; g++) {
            float *kd = key_at(kc, slot[r], g, pos[r], Hkv, D, T);
            for (int64_t d = 0; d < D; d++) kd[d * KB] = k[g * D + d];
            memcpy(vc + ((slot[r] * Hkv + g) * T + pos[r]) * D, v + g * D, D * sizeof(float));
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Causal attention for ragged rows: row r attends to cache positions        */
/* 0..pos[r] of its own slot. q: [R, H*D] with row stride ldq; out: [R, H*D]. */
/*                                                                            */
/* Work is tiled so that one load of a key or value serves several queries:   */
/* the query heads of a KV group, and up to TILE_ROWS rows of one sequence at */
/* consecutive positions (verify rows, prompt rows). Every score is the FMA   */
/* chain over d = 0..D-1; every softmax sum runs over 8-lane blocks from      */
/* position 0; every output element is the FMA chain over positions 0..n-1   */
/* (positions a row may not see carry probability exactly 0, which adds      */
/* exactly nothing). So no result depends on the tiling or on other rows.     */
/* ------------------------------------------------------------------------ */
#define TILE_ROWS 2
#define MAX_GROUP 16 /* query heads per KV head handled in one tile */

/* Scores of NQ queries against NB consecutive blocks of KB keys ([D][KB] each):
 * NQ * NB * 2 independent FMA chains, enough to hide the FMA latency. */
#define DEFINE_SCORES(NQ, NB)                                                              \
    static void scores_##NQ##_##NB(const float *const *q, const float *kb, int64_t D,      \
                                   float *const *s) {                                      \
        v8 acc[NQ][2 * NB];                                                                \
        for (int i = 0; i < NQ; i++)                                                       \
            for (int j = 0; j < 2 * NB; j++) acc[i][j] = v8_splat(0);                      \
        for (int64_t d = 0; d < D; d++) {                                                  \
            v8 k[2 * NB];                                                                  \
            for (int j = 0; j < 2 * NB; j++) k[j] = v8_load(kb + j / 2 * KB * D + d * KB + j % 2 * 8); \
            for (int i = 0; i < NQ; i++) {                                                 \
                v8 b = v8_splat(q[i][d]);                                                  \
                for (int j = 0; j < 2 * NB; j++) acc[i][j] += b * k[j];                    \
            }                                                                              \
        }                                                                                  \
        for (int i = 0; i < NQ; i++)                                                       \
            for (int j = 0; j < 2 * NB; j++) v8_store(s[i] + 8 * j, acc[i][j]);            \
    }

/* o_i[0..8 NV) = sum over t < n of p_i[t] * v[t][0..8 NV), for NQ queries. */
#define DEFINE_PV(NQ, NV)                                                                  \
    static void pv_##NQ##_##NV(const float *const *p, int64_t n, const float *v,           \
                               int64_t ldv, float *const *o) {                             \
        v8 acc[NQ][NV];                                                                    \
        for (int i = 0; i < NQ; i++)                                                       \
            for (int j = 0; j < NV; j++) acc[i][j] = v8_splat(0);                          \
        for (int64_t t = 0; t < n; t++) {                                                  \
            v8 vt[NV];                                                                     \
            for (int j = 0; j < NV; j++) vt[j] = v8_load(v + t * ldv + 8 * j);             \
            for (int i = 0; i < NQ; i++) {                                                 \
                v8 b = v8_splat(p[i][t]);                                                  \
                for (int j = 0; j < NV; j++) acc[i][j] += b * vt[j];                       \
            }                                                                              \
        }                                                                                  \
        for (int i = 0; i < NQ; i++)                                                       \
            for (int j = 0; j < NV; j++) v8_store(o[i] + 8 * j, acc[i][j]);                \
    }

DEFINE_SCORES(1, 4)
DEFINE_SCORES(2, 3)
DEFINE_SCORES(3, 2)
DEFINE_SCORES(1, 1)
DEFINE_SCORES(2, 1)
DEFINE_SCORES(3, 1)
DEFINE_SCORES(4, 1)
DEFINE_SCORES(5, 1)
DEFINE_SCORES(6, 1)
DEFINE_PV(1, 8)
DEFINE_PV(1, 4)
DEFINE_PV(2, 4)
DEFINE_PV(3, 4)
DEFINE_PV(1, 1)
DEFINE_PV(2, 1)
DEFINE_PV(3, 1)

typedef void (*scores_fn)(const float *const *, const float *, int64_t, float *const *);
/* Per query count: several key blocks at once (WIDE, NB blocks) or one. */
static const scores_fn SCORES_WIDE[7] = {0, scores_1_4, scores_2_3, scores_3_2, scores_4_1, scores_5_1, scores_6_1};
static const int WIDE_BLOCKS[7] = {0, 4, 3, 2, 1, 1, 1};
static const scores_fn SCORES_ONE[7] = {0, scores_1_1, scores_2_1, scores_3_1, scores_4_1, scores_5_1, scores_6_1};
typedef void (*pv_fn)(const float *const *, int64_t, const float *, int64_t, float *const *);
static const pv_fn PV4[4] = {0, pv_1_4, pv_2_4, pv_3_4};
static const pv_fn PV1[4] = {0, pv_1_1, pv_2_1, pv_3_1};

/* Softmax of one query's scores in place over n visible positions; the rest of
 * the row, up to `width`, becomes exactly 0. Returns 1 / sum. */
static float softmax_row(float *s, int64_t n, int64_t width, float scale) {
    int64_t n8 = (n + 7) & ~(int64_t)7;
    v8 mxv = v8_splat(-INFINITY);
    for (int64_t t = 0; t < n8; t += 8) {
        v8 idx = {0, 1, 2, 3, 4, 5, 6, 7};
        v8 x = v8_sel(idx + v8_splat((float)t) < v8_splat((float)n), v8_load(s + t) * v8_splat(scale),
                      v8_splat(-INFINITY));
        v8_store(s + t, x);
        mxv = v8_sel(x > mxv, x, mxv);
    }
    float mx = -INFINITY;
    for (int j = 0; j < 8; j++) mx = mxv[j] > mx ? mxv[j] : mx;
    v8 sumv = v8_splat(0);
    for (int64_t t = 0; t < n8; t += 8) {
        v8 x = v8_load(s + t);
        v8 e = v8_sel(x == v8_splat(-INFINITY), v8_splat(0), v8_exp(x - v8_splat(mx)));
        v8_store(s + t, e);
        sumv += e;
    }
    for (int64_t t = n8; t < width; t++) s[t] = 0;
    return 1.0f / v8_sum(sumv);
}

/* Rows [r0, r1) of one slot at consecutive positions, query heads [h0, h0 + nh) of
 * KV group g. buf holds (r1 - r0) * nh score rows of stride T + KB. */
static void attend_tile(const float *q, int64_t ldq, int64_t r0, int64_t r1, int64_t h0, int64_t nh,
                        int64_t g, int64_t Hkv, int64_t D, const float *kc, const float *vc,
                        int64_t T, const int64_t *pos, int64_t slot, float scale, float *out,
                        int64_t H, float *buf) {
    int64_t nq = (r1 - r0) * nh, width = ((pos[r1 - 1] + 1 + KB - 1) / KB) * KB;
    const float *qp[TILE_ROWS * MAX_GROUP];
    float *sp[TILE_ROWS * MAX_GROUP], *op[TILE_ROWS * MAX_GROUP], inv[TILE_ROWS * MAX_GROUP];
    int64_t n[TILE_ROWS * MAX_GROUP];
    for (int64_t i = 0; i < nq; i++) {
        int64_t r = r0 + i / nh, h = h0 + i % nh;
        qp[i] = q + r * ldq + h * D;
        op[i] = out + r * H * D + h * D;
        sp[i] = buf + i * (T + KB);
        n[i] = pos[r] + 1;
    }
    const float *kb = kc + (slot * Hkv + g) * T * D;
    for (int64_t i = 0; i < nq; i += 6) {
        int64_t m = nq - i < 6 ? nq - i : 6, wide = WIDE_BLOCKS[m] * KB;
        float *st[6];
        for (int64_t t0 = 0; t0 < width;) {
            for (int64_t j = 0; j < m; j++) st[j] = sp[i + j] + t0;
            if (t0 + wide <= width) {
                SCORES_WIDE[m](qp + i, kb + t0 * D, D, st);
                t0 += wide;
            } else {
                SCORES_ONE[m](qp + i, kb + t0 * D, D, st);
                t0 += KB;
            }
        }
    }
    for (int64_t i = 0; i < nq; i++) inv[i] = softmax_row(sp[i], n[i], width, scale);
    const float *vb = vc + (slot * Hkv + g) * T * D;
    for (int64_t i = 0; i < nq; i += 3) {
        int64_t m = nq - i < 3 ? nq - i : 3, len = 0;
        for (int64_t j = 0; j < m; j++) len = n[i + j] > len ? n[i + j] : len;
        float *o[3];
        int64_t d0 = 0;
        if (m == 1)
            for (; d0 + 64 <= D; d0 += 64) {
                o[0] = op[i] + d0;
                pv_1_8((const float *const *)(sp + i), len, vb + d0, D, o);
            }
        for (; d0 + 32 <= D; d0 += 32) {
            for (int64_t j = 0; j < m; j++) o[j] = op[i + j] + d0;
            PV4[m]((const float *const *)(sp + i), len, vb + d0, D, o);
        }
        for (; d0 < D; d0 += 8) {
            for (int64_t j = 0; j < m; j++) o[j] = op[i + j] + d0;
            PV1[m]((const float *const *)(sp + i), len, vb + d0, D, o);
        }
        for (int64_t j = 0; j < m; j++)
            for (int64_t d = 0; d < D; d += 8)
                v8_store(op[i + j] + d, v8_load(op[i + j] + d) * v8_splat(inv[i + j]));
    }
}

/* Needs H / Hkv <= MAX_GROUP and T % KB == 0 (checked when a model is loaded). */
/* Tiles of consecutive rows of one sequence, and how the (tile, head) work splits. */
typedef struct {
    int64_t *start, tiles, nh, parts, items;
} attn_plan;

static attn_plan plan_attention(int64_t R, int64_t H, int64_t Hkv, const int64_t *pos, const int64_t *slot) {
    attn_plan a = {malloc((R + 1) * sizeof(int64_t)), 0, 0, 0, 0};
    for (int64_t r = 0; r < R; r++)
        if (!a.tiles || slot[r] != slot[r - 1] || pos[r] != pos[r - 1] + 1 || r - a.start[a.tiles - 1] == TILE_ROWS)
            a.start[a.tiles++] = r;
    a.start[a.tiles] = R;
    int64_t group = H / Hkv;
    /* Too few (tile, group) items to keep the threads busy: give each head its own item. */
    a.nh = a.tiles * Hkv >= 8 ? group : 1;
    a.parts = group / a.nh;
    a.items = a.tiles * Hkv * a.parts;
    return a;
}

static float *attention_buffer(int64_t H, int64_t T) {
    return malloc(sizeof(float) * TILE_ROWS * (H > MAX_GROUP ? MAX_GROUP : H) * (T + KB));
}

static void attention_work(const attn_plan *a, const float *q, int64_t ldq, int64_t H, int64_t Hkv,
                           int64_t D, const float *kc, const float *vc, int64_t T, const int64_t *pos,
                           const int64_t *slot, float scale, float *out, float *buf) {
    int64_t group = H / Hkv;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < a->items; it++) {
        int64_t tile = it / (Hkv * a->parts), g = it / a->parts % Hkv, h0 = g * group + it % a->parts * a->nh;
        attend_tile(q, ldq, a->start[tile], a->start[tile + 1], h0, a->nh, g, Hkv, D, kc, vc, T, pos,
                    slot[a->start[tile]], scale, out, H, buf);
    }
}

void sw_attention(const float *q, int64_t ldq, int64_t R, int64_t H, int64_t Hkv, int64_t D,
                  const float *kc, const float *vc, int64_t T, const int64_t *pos,
                  const int64_t *slot, float scale, float *out) {
    attn_plan a = plan_attention(R, H, Hkv, pos, slot);
#pragma omp parallel
    {
        float *buf = attention_buffer(H, T);
        attention_work(&a, q, ldq, H, Hkv, D, kc, vc, T, pos, slot, scale, out, buf);
        free(buf);
    }
    free(a.start);
}

/* ------------------------------------------------------------------------ */
/* Decoder layers in one parallel region: a step pays one thread fork/join    */
/* and no Python between kernels, instead of several per layer. Each kernel is */
/* the same as when called alone, so results are bit-identical to that path.  */
/* ------------------------------------------------------------------------ */
typedef struct {
    const void *w;
    int64_t qtype; /* -1: fp32 panels */
} sw_mat;

typedef struct {
    const float *attn_norm, *mlp_norm;
    sw_mat qkv, o, gate_up, down;
    float *kc, *vc;
} sw_layer;

static void mat_work(const sw_mat *m, const float *x, int64_t M, int64_t K, int64_t N, float *y, float *sx) {
    if (m->qtype < 0) linear_work(x, M, K, m->w, K, N, y, N);
    else qlinear_work(x, M, K, m->w, (int)m->qtype, K, N, y, N, sx);
}

/* x [R, Dm] in place through the layers; widths (H + 2 Hkv) D and 2F are multiples
 * of NR (the caller checks), so no output needs unpadding. */
void sw_layers(float *x, int64_t R, const sw_layer *layers, int64_t L, int64_t Dm, int64_t H,
               int64_t Hkv, int64_t D, int64_t F, float eps, const float *cosv, const float *sinv,
               const int64_t *pos, const int64_t *slot, int64_t T, float scale) {
    int64_t Wqkv = (H + 2 * Hkv) * D, kmax = Dm > F ? Dm : F;
    float *h = malloc(sizeof(float) * R * (Dm + Wqkv + H * D + 2 * F + F + Dm));
    float *qkv = h + R * Dm, *attn = qkv + R * Wqkv, *gu = attn + R * H * D, *act = gu + R * 2 * F;
    float *tmp = act + R * F;
    attn_plan a = plan_attention(R, H, Hkv, pos, slot);
#pragma omp parallel
    {
        float *buf = attention_buffer(H, T), *sx = malloc(sizeof(float) * R * (kmax / QK));
        rmsnorm_work(x, R, Dm, layers[0].attn_norm, eps, h);
        for (int64_t l = 0; l < L; l++) {
            const sw_layer *ly = &layers[l];
            mat_work(&ly->qkv, h, R, Dm, Wqkv, qkv, sx);
#pragma omp single
            sw_rope_store(qkv, R, H, Hkv, D, cosv, sinv, pos, slot, ly->kc, ly->vc, T);
            attention_work(&a, qkv, Wqkv, H, Hkv, D, ly->kc, ly->vc, T, pos, slot, scale, attn, buf);
            mat_work(&ly->o, attn, R, H * D, Dm, tmp, sx);
            add_rmsnorm_work(x, tmp, R, Dm, ly->mlp_norm, eps, h);
            mat_work(&ly->gate_up, h, R, Dm, 2 * F, gu, sx);
            silu_mul_work(gu, R, F, act);
            mat_work(&ly->down, act, R, F, Dm, tmp, sx);
            add_rmsnorm_work(x, tmp, R, Dm, l + 1 < L ? layers[l + 1].attn_norm : NULL, eps, h);
        }
        free(sx);
        free(buf);
    }
    free(a.start);
    free(h);
}
