"""Progress of the benches: in a notebook an HTML bar updated in place (a display id),
left as one line saying what ran; on a terminal tqdm's bar; nothing in captured output."""

from __future__ import annotations

from IPython.utils.capture import capture_output

from bpfmagic.experiments import progress as progress_module


def test_a_notebook_bar_is_updated_in_place_and_ends_as_one_line(ip, monkeypatch):
    monkeypatch.setattr(progress_module, "_in_notebook", lambda: True)
    monkeypatch.setattr(progress_module, "UPDATE_EVERY", 0.0)  # draw every step
    with capture_output() as shown:
        with progress_module.progress(3, "bench calls") as bar:
            for _ in range(3):
                bar.update()
    first, *updates = shown.outputs
    assert '<progress value="0" max="3"' in first.data["text/html"]
    ids = {o.transient["display_id"] for o in updates} | {first.transient["display_id"]}
    assert len(ids) == 1 and all(o.update for o in updates)  # one output, redrawn
    assert '<progress value="3" max="3"' in updates[-2].data["text/html"]
    last = updates[-1].data["text/html"]
    assert "<progress" not in last and "<code>bench calls</code>: 3 steps in " in last


def test_a_bar_stopped_early_says_where(ip, monkeypatch):
    monkeypatch.setattr(progress_module, "_in_notebook", lambda: True)
    with capture_output() as shown:
        with progress_module.progress(10, "bench tailcalls") as bar:
            bar.update(4)
    assert "(stopped at 4 of 10)" in shown.outputs[-1].data["text/html"]


def test_off_a_terminal_nothing_is_drawn(capfd):
    with progress_module.progress(5, "bench calls") as bar:  # pytest's output is no terminal
        for _ in range(5):
            bar.update()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
