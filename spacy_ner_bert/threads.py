"""Make torch safe in forked workers, so `nlp.pipe(..., n_process=2)` does not hang."""
import os

_installed = False


def _single_thread_in_child() -> None:
    import torch

    # torch's CPU wheels use GNU OpenMP, whose thread pool does not survive fork(): a child
    # that runs a parallel region on the parent's pool hangs forever. One thread per worker
    # needs no pool, and is the right count when the work is spread over processes anyway.
    torch.set_num_threads(1)


def install_fork_guard() -> None:
    """Register (once) a fork hook that makes torch single-threaded in forked children."""
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_single_thread_in_child)
        _installed = True
