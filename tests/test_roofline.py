"""Roofline data of the speed cells: the algebra's FLOPs per cell (the same for every implementation),
and this machine's measured peak."""
import math

import pytest
import torch

from ctrbench.measure import cells
from ctrbench.measure.cells import ATTN_DIM, LayerCell, ModelCell, implementations
from ctrbench.probes import roofline
from ctrbench.probes.costs import afm_pooling_flops, algebraic_flops, flops, pair_product_flops


def test_afm_pooling_flops_by_hand():
    # B = 2, F = 3 (P = 3 pairs), E = 2, A = 4, per pair:
    #   products 2 + hidden 2·2·4 = 16 + bias/ReLU 2·4 = 8 + score 2·4 = 8 + softmax 3 + weighted sum 2·2 = 4
    assert afm_pooling_flops(2, 3, 2, 4) == 2 * 3 * (2 + 16 + 8 + 8 + 3 + 4) == 246
    assert afm_pooling_flops(2, 3, 2, 4, dropout=True) == 246 + 2 * 3
    assert pair_product_flops(2, 3, 2) == 2 * 3 * 2


def test_layer_cells_count_the_algebra_the_same_for_every_implementation():
    assert ATTN_DIM == 16
    per_pair = 3 * 2 + 2 * 2 * 16 + 4 * 16 + 3                      # E = 2, A = 16: 137
    for pooling, forward in (("afm", 2 * 3 * per_pair), ("product", 2 * 3 * 2)):
        for name in implementations(pooling):
            assert algebraic_flops(LayerCell(name, 3, 2, 2, "forward", pooling)) == forward, name
            assert algebraic_flops(LayerCell(name, 3, 2, 2, "train", pooling)) == 3 * forward, name
    # float64 and compiled cells: the same algebra
    assert algebraic_flops(LayerCell("afm_kernel", 3, 2, 2, "train", "afm", dtype="float64", compile=True)) == \
        3 * 2 * 3 * per_pair


def test_the_algebra_covers_what_torchs_counter_sees():
    """torch's counter sees triu_index's AFM pooling's matrix work (hidden layer, score, weighted sum)
    only: the algebraic count is that plus the elementwise rest (pair products, bias and ReLU, softmax)."""
    cell = LayerCell("triu_index", 6, 8, 4, "forward", "afm")
    counted = flops(cells.layer_step(cell))
    pairs = 15
    assert counted == 4 * pairs * (2 * 8 * ATTN_DIM + 2 * ATTN_DIM + 2 * 8)
    assert algebraic_flops(cell) - counted == 4 * pairs * (8 + 2 * ATTN_DIM + 3)


def test_afm_model_cells_by_hand(monkeypatch):
    monkeypatch.setitem(cells.SHAPES, "tiny", lambda: [3, 4, 5])
    # F = 3 (P = 3), B = 2, AFM's defaults E = A = 16, dropout 0.2 (counted in train only):
    pooling = 2 * 3 * (3 * 16 + 2 * 16 * 16 + 4 * 16 + 3)          # 3762
    rest = 2 * (3 + 2 * 16 + 2)                                      # linear term and bias, projection, sum
    for name in ("triu_index", "afm_fused", "afm_kernel"):
        assert algebraic_flops(ModelCell("afm", name, "tiny", 2, "inference")) == pooling + rest == 3836
        assert algebraic_flops(ModelCell("afm", name, "tiny", 2, "train")) == 3 * (pooling + 2 * 3 + rest)
    assert algebraic_flops(ModelCell("fm", "sum_square", "tiny", 2, "train")) is None


def test_peak_gflops_is_positive_finite_cached_and_leaves_the_threads_as_they_were():
    threads = torch.get_num_threads()
    roofline._peak.cache_clear()
    first = roofline.peak_gflops(1)
    assert math.isfinite(first) and first > 0
    assert torch.get_num_threads() == threads
    hits = roofline._peak.cache_info().hits
    assert roofline.peak_gflops(1) == first and roofline._peak.cache_info().hits == hits + 1
    assert roofline.peak_gflops(1, torch.float32) == first
    with pytest.raises(ValueError, match="threads"):
        roofline.peak_gflops(0)
