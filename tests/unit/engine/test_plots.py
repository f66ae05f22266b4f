"""The KD-terms figure."""

from yolokd.engine.plots import plot_kd_terms


def test_kd_terms_png_written(tmp_path):
    """A results.csv with train/val KD columns gives kd_terms.png; no terms gives no figure."""
    csv_path = tmp_path / "results.csv"
    csv_path.write_text(
        "epoch, train/box_loss, train/bckd_cls, train/bckd_loc, val/bckd_cls, val/bckd_loc\n"
        "1, 2.0, 0.5, 0.9, 0.4, 0.8\n2, 1.5, 0.3, 0.6, 0.35, 0.7\n"
    )
    path = plot_kd_terms(csv_path, ("bckd_cls", "bckd_loc"))
    assert path == tmp_path / "kd_terms.png" and path.stat().st_size > 1000
    assert plot_kd_terms(csv_path, ()) is None
