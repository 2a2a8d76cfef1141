"""``bench ann``: recall against the exact top 10, and the graph rows on a real Chroma server."""

from __future__ import annotations

import numpy as np

from bench.ann import graph_rows, recall


def test_recall_is_the_share_of_the_exact_top_ten_in_the_graphs_top_ten() -> None:
    exact = [{f"c{i}" for i in range(10)}, {f"c{i}" for i in range(10)}]
    found = [[f"c{i}" for i in range(9, -1, -1)] + ["x"],  # all ten, any order
             ["x"] * 5 + [f"c{i}" for i in range(10)]]  # five ranked past the tenth place
    assert recall(found, exact).tolist() == [1.0, 0.5]


async def test_each_graph_is_built_and_measured_against_the_exact_neighbours(
    chroma_url: str,
) -> None:
    rng = np.random.default_rng(7)
    matrix = rng.normal(size=(60, 8)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    questions = matrix[:4] + 0.01
    ids = [f"c{i}" for i in range(60)]
    exact = [{ids[i] for i in np.argsort(-(matrix @ q))[:10]} for q in questions]
    rows = await graph_rows(chroma_url, ids, matrix, questions, exact, builds=2)
    default, parley = "Chroma default (16 links, breadth 100)", "Parley (32 links, breadth 200)"
    assert [(r[0], r[1]) for r in rows] == [(default, 1), (default, 2), (parley, 1), (parley, 2)]
    # 60 vectors: every graph finds the exact neighbours (the misses need mixed, clustered text).
    assert all(r[2] == 1.0 and r[3] == 0 for r in rows), rows
