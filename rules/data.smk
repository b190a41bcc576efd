rule prepare_data:
    output:
        "data/{dataset}.h5",
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "logs/data/{dataset}.benchmark.tsv"
    conda:
        "../envs/advflow.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    params:
        settings=dataset_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/prepare_data.py"
