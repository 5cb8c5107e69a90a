"""KFP component: read clip shards back and count them (`vidssl.stages.inspect`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def inspect(
    config_json: str,
    clips_url: str,
    run_id: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.Markdown],
) -> str:
    """Returns the URL of the run's report.md; logs counts as KFP metrics."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import inspect as stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = stage.run(experiment_from_json(config_json), clips_url, run_id or None)
    for split, counts in result["splits"].items():
        for name in ("videos", "samples", "frames"):
            metrics.log_metric(f"{split}_{name}", counts[name])
    metrics.log_metric("skipped_inputs", len(result["skipped"]))
    with open(report.path, "w") as handle:
        handle.write(stage.render_markdown(result))
    return result["report_url"]
