"""Loaders for the tiny local lm-eval tasks: the jsonl files beside this file, found from any working dir."""

import os

import datasets

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name: str) -> datasets.DatasetDict:
    return datasets.load_dataset("json", data_files={"test": os.path.join(HERE, name)})


def load_choices(**kwargs) -> datasets.DatasetDict:
    return _load("choices.jsonl")


def load_passages(**kwargs) -> datasets.DatasetDict:
    return _load("passages.jsonl")


def load_answers(**kwargs) -> datasets.DatasetDict:
    return _load("answers.jsonl")
