"""Rule defense_scores: every configured detector's score and the reformer's prediction for one set."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.defenses.magnet import Reformer, load_autoencoder  # noqa: E402
from advflow.defenses.metrics import write_scores  # noqa: E402
from advflow.defenses.stage import build_detectors, load_detector_state, score_set  # noqa: E402
from advflow.models.architectures import load_checkpoint  # noqa: E402

# Every detector module the registry may build (advflow.defenses.registry loads them with importlib): in this rule's
# code digest, so a change to a detector's code reruns its fitting and scoring.
from advflow.defenses import infopath, lid, magnet, mahalanobis, mine  # noqa: E402, F401

ready()

settings = dict(sm.params.settings)
classifier = load_checkpoint(sm.input.classifier, device)
autoencoders = {name: load_autoencoder(sm.input[name], device) for name in ("ae_i", "ae_ii")}
states = {name: load_detector_state(name, sm.input[name]) for name in settings["detectors"] if name in sm.input.keys()}
detectors = build_detectors(list(settings["detectors"]), classifier, autoencoders, states, settings,
                            seed=sm.params.seed)
control = sm.input.control if "control" in sm.input.keys() else None  # a study set's control is a file of its own
write_scores(sm.output[0], score_set(sm.input.set, detectors, classifier, Reformer(autoencoders["ae_i"]), device,
                                     control_path=control))
