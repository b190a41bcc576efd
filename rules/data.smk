rule prepare_data:
    output:
        "data/{dataset}.h5",
    params:
        settings=dataset_settings,
        seed=config["seed"],
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "logs/data/{dataset}.benchmark.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/advflow.yaml"
    script:
        "../workflow_scripts/prepare_data.py"
