rule select_normal_train:
    input:
        data="data/{dataset}.h5",
    output:
        "results/{dataset}/inputs/normal_train.h5",
    log:
        "results/{dataset}/logs/normal_train.log",
    benchmark:
        "results/{dataset}/benchmarks/normal_train.tsv"
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    params:
        code=code("select_normal_train.py"),
        n=config["inputs"]["n"],
        seed=config["seed"],
    script:
        "../workflow_scripts/select_normal_train.py"


rule select_inputs:
    input:
        data="data/{dataset}.h5",
        models=profile_models,
    output:
        normal_test="results/{dataset}/inputs/normal_test.h5",
    log:
        "results/{dataset}/logs/inputs.log",
    benchmark:
        "results/{dataset}/benchmarks/inputs.tsv"
    conda:
        "../envs/advflow.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("select_inputs"),
    params:
        code=code("select_inputs.py"),
        n=config["inputs"]["n"],
        seed=config["seed"],
    script:
        "../workflow_scripts/select_inputs.py"


rule attack:
    input:
        model="results/{dataset}/models/{target}.pt",
        seeds="results/{dataset}/inputs/normal_test.h5",
    output:
        "results/{dataset}/adv/{target}/{attack}.h5",
    log:
        "results/{dataset}/logs/attack/{target}/{attack}.log",
    benchmark:
        "results/{dataset}/benchmarks/attack/{target}/{attack}.tsv"
    wildcard_constraints:
        target="|".join(MODEL_NAMES),
        attack="|".join(ATTACK_NAMES),
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("attack"),
    params:
        code=code("attack.py"),
        settings=attack_params,
        seed=config["seed"],
        batch_size=config["attacks"]["batch_size"],
    script:
        "../workflow_scripts/attack.py"


rule control:
    input:
        attack_set="results/{dataset}/adv/{target}/{attack}.h5",
        seeds="results/{dataset}/inputs/normal_test.h5",
        model="results/{dataset}/models/{target}.pt",
    output:
        "results/{dataset}/adv/{target}/random_{attack}.h5",
    log:
        "results/{dataset}/logs/control/{target}/{attack}.log",
    benchmark:
        "results/{dataset}/benchmarks/control/{target}/{attack}.tsv"
    wildcard_constraints:
        target="|".join(MODEL_NAMES),
        attack="|".join(ATTACK_NAMES),
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    params:
        code=code("control.py"),
        seed=config["seed"],
    script:
        "../workflow_scripts/control.py"


rule jsma_trajectories:
    input:
        model="results/{dataset}/models/{target}.pt",
        seeds="results/{dataset}/inputs/normal_test.h5",
    output:
        "results/{dataset}/trajectories/{target}/jsma.h5",
    log:
        "results/{dataset}/logs/trajectories/{target}.log",
    benchmark:
        "results/{dataset}/benchmarks/trajectories/{target}.tsv"
    wildcard_constraints:
        target="|".join(MODEL_NAMES),
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpu_request(),
        gpu_mem_mb=gpu_memory("jsma_trajectories"),
    params:
        code=code("trajectories.py"),
        settings=jsma_params,
        n=config["trajectories"]["n"],
    script:
        "../workflow_scripts/trajectories.py"


rule trajectory_control:
    input:
        "results/{dataset}/trajectories/{target}/jsma.h5",
    output:
        "results/{dataset}/trajectories/{target}/random_jsma.h5",
    log:
        "results/{dataset}/logs/trajectories/{target}_control.log",
    wildcard_constraints:
        target="|".join(MODEL_NAMES),
    conda:
        "../envs/advflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    params:
        code=code("trajectory_control.py"),
        seed=config["seed"],
    script:
        "../workflow_scripts/trajectory_control.py"


rule attack_tables:
    input:
        sets=adversarial_sets,
        models=transfer_models,
    output:
        attacks="results/{dataset}/tables/attacks.csv",
        transferability="results/{dataset}/tables/transferability.csv",
    log:
        "results/{dataset}/logs/attack_tables.log",
    conda:
        "../envs/advflow.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    params:
        code=code("attack_tables.py"),
        transfer=transfer_pairs,
    script:
        "../workflow_scripts/attack_tables.py"
