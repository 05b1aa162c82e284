"""The tools beneath the paper's code, each run from the repository root as a module:

    python -m tools.demo       using a trained model: reconstructions, predictions, features, mask pictures
    python -m tools.bench      speed and memory: the encoder against torchvision, the joint step, tokenizers, data
    python -m tools.reproduce  the paper's Tables 1, 2 and 8 in miniature: the factorial task, many seeds, intervals
    python -m tools.factorial  that task's videos and images alone
    python -m tools.dataset    check a dataset; extract frame folders; the prepared format; the small VQ tokenizer;
                               the synthetic set of the embedded default

The paper's files never import this folder.
"""
