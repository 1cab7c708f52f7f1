"""What every benchmark shares: its --output_dir and --data_dir flags, the
provenance of a result and its title, the mean and spread over seeds, and
writing it as JSON and as a markdown table."""

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess

from absl import flags

flags.disclaim_key_flags()  # the flags defined here belong to the benchmark that asks

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def define_output_dir(files="the JSON and markdown results"):
    """Defines the calling benchmark's --output_dir flag, benchmarks/results
    by default; --help lists it with the benchmark's own flags."""
    flags.DEFINE_string("output_dir", RESULTS_DIR, f"Where {files} are written.")


def define_data_dir():
    """Defines the calling benchmark's --data_dir flag: the folder holding
    mnist.npz, by default the one $KERAS_RBP_DATA names."""
    flags.DEFINE_string("data_dir", None, "Folder holding mnist.npz (else $KERAS_RBP_DATA).")


def define_models(known, text="Models to run"):
    """Defines the calling benchmark's --models flag, a list of names from
    `known` (all of them by default); another name is a flag error that
    lists the known ones."""
    known = list(known)
    flags.DEFINE_list("models", known, f"{text}, of {known}.")
    flags.register_validator("models", lambda names: set(names) <= set(known),
                             message=f"--models takes names from {known}")


def provenance():
    """What made a result: the commit, package versions, Keras mode and
    machine, and the load when the benchmark started."""
    from keras_rbp._keras import BACKEND, IS_KERAS_3, keras

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True)
    # Changes to the code; the results a benchmark is writing do not count.
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)benchmarks/results"], capture_output=True, text=True)
    versions = {}
    for package in ("keras-rbp", "tensorflow", "keras", "tf-keras", "jax", "torch", "ai-edge-litert", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {
        "commit": commit.stdout.strip() or None,
        "uncommitted_changes": bool(dirty.stdout.strip()),
        "versions": versions,
        "keras": "keras3" if IS_KERAS_3 else "tf_keras",
        "keras_version": keras.__version__,
        "backend": BACKEND,
        "machine": {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
                    "load_average_at_start": list(os.getloadavg())},
    }


def title(text, provenance):
    """A result's markdown heading: `text`, then the Keras mode and version
    and the commit that made it."""
    return (f"# {text} ({provenance['keras']}, Keras {provenance['keras_version']}, "
            f"commit {str(provenance['commit'])[:7]})")


def mean_std(values):
    """The mean and the sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown_table(header, rows):
    """A markdown table: `header` a list of column names, `rows` lists of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def uncommitted_note(result):
    """The line a result's markdown carries when its provenance says the code
    had uncommitted changes (`uncommitted_changes` in the JSON), else ""."""
    if not result.get("uncommitted_changes"):
        return ""
    commit = str(result.get("commit"))[:7]
    return (f"**Uncommitted changes:** made from commit {commit} with uncommitted changes to the code "
            "(`uncommitted_changes: true` in the JSON): the commit alone may not reproduce it.\n\n")


def with_provenance_flags(markdown, result):
    """`markdown` with `uncommitted_note` after its title (its first line,
    when that is a heading), else at its top; unchanged if it has it."""
    note = uncommitted_note(result)
    if not note or note in markdown:
        return markdown
    if markdown.startswith("# "):
        title, _, rest = markdown.partition("\n")
        return f"{title}\n\n{note}{rest.lstrip(chr(10))}"
    return note + markdown


def write_results(output_dir, name, result, markdown):
    """Writes `name`.json (`result`, plain data) and `name`.md (`markdown`,
    flagged with `uncommitted_note` where the result's provenance says so)
    under `output_dir`, each atomically; returns the two paths."""
    markdown = with_provenance_flags(markdown, result)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for ext, text in (("json", json.dumps(result, indent=2) + "\n"), ("md", markdown)):
        path = os.path.join(output_dir, f"{name}.{ext}")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


class RunCache:
    """Finished runs of a long benchmark, one JSON file keyed by a run's
    settings: a run stopped part way resumes where it stopped, and a table
    can fill over several runs. Each run records the provenance that made it."""

    def __init__(self, path):
        self.path = path
        self.runs = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.runs = json.load(f)["runs"]

    def get_or_run(self, key, run):
        """The cached result of `key`, or `run()`'s, stored at once."""
        if key not in self.runs:
            self.runs[key] = {"result": run(), "provenance": provenance()}
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path + ".tmp", "w", encoding="utf-8") as f:
                json.dump({"runs": self.runs}, f, indent=1)
            os.replace(self.path + ".tmp", self.path)
        return self.runs[key]["result"]
