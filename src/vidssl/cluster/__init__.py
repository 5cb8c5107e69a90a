"""Training beyond one process: the torchrun command (one pod, several GPUs) and Kubeflow
Trainer's TrainJob (several nodes), built in `trainjob` and run and watched in `launch`."""

from vidssl.store import ENV_ACCESS_KEY, ENV_ENDPOINT, ENV_SECRET_KEY

#: How a torchrun'd `vidssl train` gets the experiment: the resolved experiment as JSON, the
#: string a pipeline hands its components (no credentials: those come from the S3 Secret).
EXPERIMENT_JSON_ENV = "VIDSSL_EXPERIMENT_JSON"

#: Keys of the S3 Secret (`cluster.s3_secret`) -> the environment variables the store reads.
S3_SECRET_KEYS = {
    "endpoint": ENV_ENDPOINT,
    "access-key": ENV_ACCESS_KEY,
    "secret-key": ENV_SECRET_KEY,
}
