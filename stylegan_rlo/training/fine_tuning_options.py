"""How the fine-tuning options (--adapt-resolution, exact resume, --ema-kimg/--ema-rampup, --metric-data/--best-metric)
combine with the resumed network and the dataset, called once from `training_config.setup_training_options` (their
types and ranges are checked by the option table there)."""

from __future__ import annotations

from stylegan_rlo.training.config import TrainingOptionsError


def check_metric_data(metric_data: str, resolution: int, channels: int, c_dim: int) -> str:
    """--metric-data: a dataset with the training data's resolution and channels (and labels when conditional)."""
    from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
    try:
        held_out = ImageFolderDataset(path=metric_data, use_labels=c_dim > 0)
    except (DatasetError, OSError) as e:
        raise TrainingOptionsError(f"--metric-data {metric_data}: {e}") from e
    try:
        if (held_out.resolution, held_out.num_channels) != (resolution, channels):
            raise TrainingOptionsError(
                f"--metric-data {metric_data} has {held_out.num_channels}-channel {held_out.resolution}x"
                f"{held_out.resolution} images but the training data has {channels}-channel {resolution}x"
                f"{resolution} ones; evaluate against images like the training data")
        if c_dim and (not held_out.has_labels or held_out.label_dim != c_dim):
            raise TrainingOptionsError(f"--metric-data {metric_data}: the training is conditional (labels of size "
                                       f"{c_dim}) but this dataset has no matching dataset.json labels")
    finally:
        held_out.close()
    return metric_data


def apply(args: dict, G_kwargs: dict, D_kwargs: dict, *, resume: str | None, resume_data: dict | None,
          resolution: int, channels: int, c_dim: int, adapt_resolution: bool, ema_kimg: float | None,
          ema_rampup: float | str | None, metric_data: str | None, best_metric: str | None,
          exact_resume: bool = True) -> tuple[dict, dict]:
    """Set the fine-tuning entries of the training_loop kwargs `args`; returns the (possibly adapted) G/D kwargs.

    Sets resume_transfer (the --adapt-resolution report, or None), resume_state (the state file used for an exact
    resume, or None; `exact_resume=False` ignores it), ema_kimg / ema_rampup / ada_kimg, metric_data and best_metric.
    """
    from stylegan_rlo.training import adapt_resolution as adapt
    from stylegan_rlo.training import state as training_state
    from stylegan_rlo.training.best_snapshot import resolve_best_metric

    args["resume_transfer"] = args["resume_state"] = None
    if adapt_resolution and resume is None:
        raise TrainingOptionsError("--adapt-resolution needs --resume (the network to adapt)")
    if resume is not None and adapt_resolution:
        G_kwargs, D_kwargs, args["resume_transfer"] = adapt.adapt(resume_data, G_kwargs, D_kwargs, resolution,
                                                                  resume)
    if resume is not None and args["resume_transfer"] is None and exact_resume:
        path = training_state.find_state(resume)
        if path is not None:
            state = training_state.read(path, progress=resume_data.get("progress") or {})
            schedule = state["schedule"]  # the run continues with the values it was using
            args["ada_kimg"], args["ema_rampup"] = schedule["ada_kimg"], schedule["ema_rampup"]
            args["resume_state"] = path

    if ema_kimg is not None:
        args["ema_kimg"] = ema_kimg
    if ema_rampup is not None:  # a number, or the table's off word "none"
        args["ema_rampup"] = None if isinstance(ema_rampup, str) else ema_rampup

    if metric_data is not None and not args["metrics"]:
        raise TrainingOptionsError("--metric-data needs --metrics (e.g. --metrics fid50k_full)")
    args["metric_data"] = None if metric_data is None else check_metric_data(metric_data, resolution, channels,
                                                                             c_dim)
    args["best_metric"] = resolve_best_metric(best_metric, args["metrics"])
    return G_kwargs, D_kwargs
