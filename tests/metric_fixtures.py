"""Fixtures in each benchmark's schema, scored once by the official scorers (figures in test_metrics_official.py).

The official implementations were run on exactly these values, outside the repository (not vendored):
- VQA: GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (VQAEval.evaluate)
- ANLS: DocVQA/InfographicVQA ``infographicsvqa_eval.py`` (RRC; as shipped in QwenLM/Qwen-VL eval_mm)
- ChartQA: ``relaxed_correctness`` of lmms-eval ``tasks/chartqa/utils.py`` (from Qwen-VL ``evaluate_vqa.py``)
- POPE: AoiDragon/POPE ``evaluate.py``
- MME: MME ``eval_tool/calculation.py`` (as shipped with LLaVA's playground copies)
- MMMU: MMMU-Benchmark/MMMU ``mmmu/utils/eval_utils.py`` (parse_multi_choice_response)
- WER: openai/whisper ``whisper/normalizers`` EnglishTextNormalizer + jiwer.wer (the Whisper paper's recipe)
"""

from __future__ import annotations

import random

# VQAv2 rows: (prediction as the model wrote it, the ten human answers as released)
VQA = [
    ("Two", ["2"] * 10),
    ("2 dogs.", ["2", "2", "two", "2 dogs", "2 dogs", "2", "3", "2 dogs", "2", "2 dogs"]),
    ("yes", ["yes", "yes", "no", "yes", "no", "no", "no", "no", "no", "no"]),
    ("T-shirt", ["t shirt", "tshirt", "t-shirt", "shirt", "t shirt", "t shirt", "tee", "shirt", "t-shirt", "t shirt"]),
    ("1,000", ["1000", "1,000", "1000", "100", "1000", "1000", "thousand", "1000", "1000", "1000"]),
    ("dont know", ["don't know", "dont know", "unknown", "don't know", "no idea", "?", "unsure", "no", "yes", "?"]),
    ("A red apple", ["red apple", "apple", "red apple", "apple", "fruit", "apple", "red", "apples", "apple", "red"]),
    ("on the table", ["table", "on table", "on table", "counter", "table", "on table", "table", "desk", "table", "on table"]),
    ("3.5", ["3.5", "3.5", "3.50", "3 and half", "3.5", "4", "3.5", "3", "3.5", "3.5"]),
    ("nothing", ["0", "none", "nothing", "0", "0", "nothing", "none", "0", "nothing", "0"]),
]

# DocVQA rows: (prediction, answers)
ANLS = [
    ("1995", ["1995"]),
    ("ITC Limited", ["itc limited", "ITC Ltd"]),
    ("  Tobacco   Institute ", ["The Tobacco Institute"]),
    ("$ 12,000", ["$12,000"]),
    ("Jan 4 1998", ["January 4, 1998", "4 january 1998"]),
    ("resarch", ["research"]),
    ("abc", ["xyz"]),
    ("", ["0.5%"]),
    ("Dr. S. Smith", ["S. Smith", "Dr. Smith"]),
]

# ChartQA rows: (prediction, answer)
CHARTQA = [
    ("10.4", "10"), ("10.6", "10"), ("52%", "0.5"), ("Yes", "yes"), ("0", "0"), ("0.01", "0"),
    ("1,200", "1200"), ("-3", "-3.1"), ("Brazil", "brazil "), ("12.5", "12.5%"),
]

# POPE rows: (reply, label)
POPE = [
    ("Yes, there is a dog in the image.", "yes"), ("No, there is no cat.", "no"), ("Yes.", "no"),
    ("There is not a car in the image.", "yes"), ("yes", "yes"), ("No", "no"), ("I see a bench, yes", "no"),
    ("The image does not show a person. It is empty", "yes"), ("Yes", "yes"), ("NO.", "no"),
    ("Absolutely, a sofa.", "yes"), ("no, not really", "no"),
]

# MME rows: (question_id = image, category, label, reply); two questions per image, two images per subtask
MME_CATEGORIES = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR", "commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]
_REPLIES = ["Yes", "No", "yes, it is", "No, it is not.", "Nope", "I don't know", "not sure", "yes.", "no"]


def mme_rows() -> list[tuple[str, str, str, str]]:
    rng = random.Random(19)
    rows = []
    for category in MME_CATEGORIES:
        for image in range(2):
            for label in ("Yes", "No"):  # MME pairs a yes question and a no question on each image
                rows.append((f"{category}/{image:04d}.png", category, label, rng.choice(_REPLIES)))
    return rows


# MMMU / ScienceQA rows: (reply, options, gold letter)
CHOICE = [
    ("(B)", ["cat", "dog", "bird"], "B"),
    ("The answer is C.", ["1", "2", "3", "4"], "C"),
    ("B", ["red", "green"], "B"),
    ("I think the correct option is (A) rather than (D).", ["x", "y", "z", "w"], "D"),
    ("After looking at the chart carefully, the value shown is photosynthesis", ["respiration", "photosynthesis"], "B"),
    ("I choose A because it fits best here", ["yes", "no"], "A"),
    ("Answer: D", ["a", "b", "c", "d"], "D"),
    ("Both A and B look plausible but B is right", ["p", "q", "r"], "B"),
]

# LibriSpeech-style rows: (hypothesis, reference as LibriSpeech writes it)
WER = [
    ("He hoped there would be stew for dinner, turnips and carrots.",
     "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS"),
    ("Mr. Quilter is the apostle of the middle classes", "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES"),
    ("It was twenty-one years ago", "IT WAS TWENTY ONE YEARS AGO"),
    ("the colour of the sky", "THE COLOR OF THE SKY"),
    ("we're going home now", "WE ARE GOING HOME"),
]
