# The defense stage (docs/method.md, "Defenses and detectors"): MagNet and the MID detector against transfer
# attacks crafted on the undefended classifier; seed 003's Tables 1 and 2. Runs when the config has a
# `defense` block (advflow.defenses.stage). The attack and scoring jobs are single-threaded, so that the
# cores run several of them at once.


rule defense_inputs:
    input:
        data="data/{dataset}.h5",
        classifier=defense_classifier,
    output:
        seeds="results/{dataset}/defense/inputs/seeds.h5",
        validation="results/{dataset}/defense/inputs/validation.h5",
        clean="results/{dataset}/defense/inputs/clean.h5",
    log:
        "results/{dataset}/logs/defense/inputs.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/inputs.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("defense_inputs"),
    params:
        code=code("defense_inputs.py"),
        settings=lambda w: defense_params("classifier", "n", "validation", "clean"),
        seed=config["seed"],
    script:
        "../workflow_scripts/defense_inputs.py"


rule train_autoencoder:
    input:
        data="data/{dataset}.h5",
    output:
        "results/{dataset}/defense/autoencoders/{ae}.pt",
    log:
        "results/{dataset}/logs/defense/autoencoders/{ae}.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/autoencoders/{ae}.tsv"
    wildcard_constraints:
        ae="ae_i|ae_ii",
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("train_autoencoder"),
    params:
        code=code("train_autoencoder.py"),
        settings=lambda w: defense_params("autoencoder"),
        seed=config["seed"],
    script:
        "../workflow_scripts/train_autoencoder.py"


rule fit_mid:
    input:
        data="data/{dataset}.h5",
        classifier=defense_classifier,
        ae_i="results/{dataset}/defense/autoencoders/ae_i.pt",
    output:
        "results/{dataset}/defense/detectors/mid.pt",
    log:
        "results/{dataset}/logs/defense/mid.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/mid.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("fit_mid"),
    params:
        code=code("fit_mid.py"),
        settings=lambda w: defense_params("mine"),
        seed=config["seed"],
    script:
        "../workflow_scripts/fit_mid.py"


rule fit_detector:
    input:
        data="data/{dataset}.h5",
        classifier=defense_classifier,
    output:
        "results/{dataset}/defense/detectors/{detector}.pt",
    log:
        "results/{dataset}/logs/defense/{detector}.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/{detector}.tsv"
    wildcard_constraints:
        detector="|".join(FITTED_BY_RULE),
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("fit_detector"),
    params:
        code=code("fit_detector.py"),
        settings=lambda w: defense_params(w.detector),
        seed=config["seed"],
    script:
        "../workflow_scripts/fit_detector.py"


rule defense_attack:
    input:
        classifier=defense_classifier,
        seeds="results/{dataset}/defense/inputs/seeds.h5",
    output:
        "results/{dataset}/defense/adv/{sweep}.h5",
    log:
        "results/{dataset}/logs/defense/adv/{sweep}.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/adv/{sweep}.tsv"
    wildcard_constraints:
        sweep=SWEEP_PATTERN,
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("defense_attack"),
    params:
        code=code("defense_attack.py"),
        attack=lambda w: SWEEPS[w.sweep][0],
        strength=lambda w: SWEEPS[w.sweep][1],
        settings=lambda w: defense_params(SWEEPS[w.sweep][0], "batch_size"),
        seed=config["seed"],
    script:
        "../workflow_scripts/defense_attack.py"


rule defense_scores:
    input:
        unpack(defense_score_inputs),
    output:
        "results/{dataset}/defense/scores/{scored}.csv",
    log:
        "results/{dataset}/logs/defense/scores/{scored}.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/scores/{scored}.tsv"
    wildcard_constraints:
        scored=f"validation|clean|{SWEEP_PATTERN}|{STUDY_PREFIX}[a-z0-9_]+",
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("defense_scores"),
    params:
        code=code("defense_scores.py"),
        settings=lambda w: canonical(
            {
                "detectors": defense_scored_detectors(),
                "mine": DEFENSE["mine"],
                **{
                    d: DEFENSE[d]
                    for d in defense_scored_detectors()
                    if d in FITTED_BY_RULE
                },
            }
        ),
        seed=config["seed"],
    script:
        "../workflow_scripts/defense_scores.py"


rule defense_tables:
    input:
        validation="results/{dataset}/defense/scores/validation.csv",
        clean="results/{dataset}/defense/scores/clean.csv",
        sweeps=lambda w: [
            f"results/{w.dataset}/defense/scores/{s}.csv" for s in defense_sweeps()
        ],
        dropout=lambda w: dropout_outputs(w.dataset),
        validation_set="results/{dataset}/defense/inputs/validation.h5",
        clean_set="results/{dataset}/defense/inputs/clean.h5",
        sweep_sets=lambda w: [
            f"results/{w.dataset}/defense/adv/{s}.h5" for s in defense_sweeps()
        ],
        studies=lambda w: [
            f"results/{w.dataset}/defense/scores/{STUDY_PREFIX}{a}.csv"
            for a in defense_study_attacks()
        ],
        study_sets=lambda w: [
            f"results/{w.dataset}/adv/{DEFENSE['classifier']}/{a}.h5"
            for a in defense_study_attacks()
        ],
    output:
        tables=directory("results/{dataset}/defense/tables"),
        figures=directory("results/{dataset}/defense/figures"),
    log:
        "results/{dataset}/logs/defense/tables.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/tables.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code("defense_tables.py"),
        settings=lambda w: defense_params(
            "classifier",
            "detectors",
            "compared",
            "reformer",
            "fpr",
            "attacks",
            "epsilons",
            "kappas",
        ),
        resamples=config["report"]["bootstrap_resamples"],
        seed=config["seed"],
    script:
        "../workflow_scripts/defense_tables.py"


# Seed 001's dropout vote and its vote-spread detector (advflow.defenses.vote).
rule dropout_vote:
    input:
        classifier=defense_classifier,
        sets=lambda w: [path for _, _, path in dropout_vote_sets(w.dataset)],
    output:
        directory("results/{dataset}/defense/dropout"),
    log:
        "results/{dataset}/logs/defense/dropout.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/dropout.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("dropout_vote"),
    params:
        code=code("dropout_vote.py"),
        settings=lambda w: defense_params("dropout_vote"),
        sets=lambda w: dropout_vote_sets(w.dataset),
        seed=config["seed"],
    script:
        "../workflow_scripts/dropout_vote.py"


# Adaptive attacks (defense.adaptive; advflow.defenses.adaptive): per target (the undefended classifier, the whole
# defense, each judged detector alone) and budget, a white-box attack that knows the target's guards.
rule adaptive_attack:
    input:
        unpack(adaptive_attack_inputs),
    output:
        "results/{dataset}/defense/adaptive/{target}/{adaptive}.h5",
    log:
        "results/{dataset}/logs/defense/adaptive/{target}/{adaptive}.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/adaptive/{target}/{adaptive}.tsv"
    wildcard_constraints:
        target="|".join(ADAPTIVE_TARGETS) or "none",
        adaptive="|".join(re.escape(s) for s in ADAPTIVE_SETS) or "none",
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("adaptive_attack"),
    params:
        code=code("adaptive_attack.py"),
        settings=lambda w: adaptive_params(w.target),
        seed=config["seed"],
    script:
        "../workflow_scripts/adaptive_attack.py"


rule adaptive_tables:
    input:
        sets=lambda w: adaptive_files(w.dataset),
        validation="results/{dataset}/defense/scores/validation.csv",
        sweeps=lambda w: [
            f"results/{w.dataset}/defense/scores/{s}.csv" for s in defense_sweeps()
        ],
        dropout=lambda w: dropout_outputs(w.dataset),
    output:
        tables=directory("results/{dataset}/defense/adaptive/tables"),
        figures=directory("results/{dataset}/defense/adaptive/figures"),
    log:
        "results/{dataset}/logs/defense/adaptive/tables.log",
    benchmark:
        "results/{dataset}/benchmarks/defense/adaptive/tables.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code("adaptive_tables.py"),
        settings=lambda w: defense_params(
            "detectors",
            "compared",
            "reformer",
            "fpr",
            "attacks",
            "epsilons",
            "kappas",
            "dropout_vote",
            "adaptive",
        ),
        seed=config["seed"],
    script:
        "../workflow_scripts/adaptive_tables.py"
