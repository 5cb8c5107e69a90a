"""KFP component: optical flow and point tracks of clip shards (`vidssl.stages.flow`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def flow(config_json: str, clips_url: str, force: bool, metrics: dsl.Output[dsl.Metrics]) -> str:
    """Returns the URL of the track shards (they follow the clip shards one for one); logs the
    clips tracked, tracks per clip and the estimator's frames/s as KFP metrics."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import flow as stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = stage.run(experiment_from_json(config_json), clips_url, force=force)
    details = output.manifest.details
    metrics.log_metric("clips", details["tracked"])
    metrics.log_metric("skipped_clips", details["skipped"])
    metrics.log_metric("tracks_per_clip", details["tracks_per_clip"])
    metrics.log_metric("mean_track_length", details["mean_track_length"])
    metrics.log_metric("flow_frames_per_second", details["flow_frames_per_second"])
    return output.url
