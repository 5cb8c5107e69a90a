"""KFP component: the end of a pipeline run deletes the run's series from the Pushgateway
(`vidssl.metrics.clean_up_run`), which would otherwise keep them forever."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def delete_run_metrics(
    experiment_name: str, run_id: str, grace_seconds: float, stale_hours: float
) -> int:
    """Waits `grace_seconds` (more than the Pushgateway's scrape interval), then deletes the
    groups of this run (VIDSSL_RUN_ID, else `run_id`) and the experiment's groups last pushed
    more than `stale_hours` ago (0: none). Returns how many groups were deleted."""
    import logging

    from vidssl.metrics import clean_up_run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return clean_up_run(
        experiment_name,
        run_id or None,
        grace_seconds=grace_seconds,
        stale_seconds=stale_hours * 3600 if stale_hours > 0 else None,
    )
