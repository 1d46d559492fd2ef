"""Names shared by the operator, its builders and its tests: API coordinates, labels, paths."""

from __future__ import annotations

WORKERS = 8  # handler threads (--workers), and so the operator's PostgreSQL connections
# Trial Jobs one StudyJob may run at once (--max-jobs-per-studyjob, the chart's
# operator.maxJobsPerStudyJob): one spec cannot flood a cluster.
MAX_JOBS = 100

GROUP = "kubetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "StudyJob"
PLURAL = "studyjobs"
SHORT_NAME = "sj"

# Labels on every child object. Kubernetes ignores nothing here: the operator lists
# Jobs by these labels and also filters by them locally (a selector may be ignored).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_STUDYJOB = "kubetune.dev/studyjob"
LABEL_TRIAL = "kubetune.dev/trial"
LABEL_RESUME = "kubetune.dev/resume"  # 0 for a trial's first Job, k for its k-th resume
# On every pod that mounts a results claim (trials, visualisation, the chart's TensorBoard):
# pods of a single-node claim require a node that runs another pod with this label.
LABEL_RESULTS_CLAIM = "kubetune.dev/results-claim"
MANAGED_BY = "kubetune-operator"
# Kueue's labels on a Job: the LocalQueue it goes to, and its WorkloadPriorityClass.
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"
KUEUE_API_VERSION = "kueue.x-k8s.io/v1beta2"
APP_NAME = "kubetune"

ANNOTATION_STUDY = "kubetune.dev/study"
ANNOTATION_FINISHED = "kubetune.dev/finished-trials"
ANNOTATION_BEST_TRIAL = "kubetune.dev/best-trial"
ANNOTATION_FRONT_CONFIGS = "kubetune.dev/pareto-configs"  # "<in the ConfigMap>/<on the front>"

FINALIZER = "kubetune.dev/finalizer"

# Where the trial pod finds things.
CONFIG_DIR = "/etc/kubetune"
CONFIG_KEY = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
DATA_DIR = "/data"
RESULTS_DIR = "/results"
BEST_CONFIG_KEY = "best_config.yaml"
STORAGE_ENV = "KUBETUNE_STORAGE_URL"

# Longest StudyJob name: child names add at most 17 characters ("-trial-999999-r99")
# and a Job name must fit a 63-character label value.
MAX_NAME_LENGTH = 45


def owner_key(namespace: str, name: str) -> str:
    """The value of :data:`kubetune.search.attributes.OWNER_ATTR` for a StudyJob."""
    return f"{namespace}/{name}"


def trial_job_name(studyjob: str, number: int, resume: int = 0) -> str:
    """``<name>-trial-<n>``; the Job that resumes a disrupted trial the k-th time ends ``-r<k>``."""
    return f"{studyjob}-trial-{number}" + (f"-r{resume}" if resume else "")


def visualise_job_name(studyjob: str) -> str:
    return f"{studyjob}-visualise"


def config_map_name(studyjob: str) -> str:
    return f"{studyjob}-config"


def front_config_key(trial: int) -> str:
    """The best-config ConfigMap's key for a Pareto-optimal trial's config."""
    return f"pareto-trial-{trial}.yaml"


def best_config_map_name(studyjob: str) -> str:
    return f"{studyjob}-best-config"


def child_labels(studyjob: str, component: str) -> dict[str, str]:
    """Labels every object the operator creates for ``studyjob`` carries."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_STUDYJOB: studyjob,
    }
