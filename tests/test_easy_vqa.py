"""The quickstart recipe's surgery on easy-VQA's training questions (omnilm.data.easy_vqa)."""

from collections import Counter

from omnilm.data.easy_vqa import balance, is_negated, paired_order, question_type, single_turn


def record(i, question, answer, category="yesno"):
    """An easy-VQA-shaped training record about one image."""
    return {"id": i, "category": category, "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                                              {"from": "gpt", "value": answer}]}


def test_single_turn_asks_each_question_alone_as_the_evaluation_does():
    records = [{"image": f"i{k % 2}.png", "conversations": [{"from": "human", "value": f"<image>\nis q{k}?"},
                                                            {"from": "gpt", "value": f"a{k}"}]} for k in range(3)]
    rows = single_turn(records, "\nOne word.")
    assert [r["conversations"] for r in rows] == [
        [{"from": "human", "value": "<image>\nis q0?\nOne word."}, {"from": "gpt", "value": "a0"}],
        [{"from": "human", "value": "<image>\nIs q1?\nOne word."}, {"from": "gpt", "value": "a1"}],  # as Whisper writes
        [{"from": "human", "value": "<image>\nis q2?\nOne word."}, {"from": "gpt", "value": "a2"}],
    ]
    assert [r["image"] for r in rows] == ["i0.png", "i1.png", "i0.png"]


def test_balance_keeps_open_questions_balances_yes_no_answers_per_question_type_and_thins_negated_ones():
    colours = ["red", "teal", "blue", "gray"]
    records = [record(i, f"is there a {colours[i % 4]} shape?", "yes" if i % 8 == 0 else "no") for i in range(80)]
    records += [record(100 + i, f"is there not a {colours[i % 4]} shape?", "no" if i % 4 == 0 else "yes")
                for i in range(40)]
    records += [record(200 + i, "what color is the shape?", "red", "color") for i in range(5)]
    kept = balance(records, seed=0)
    answers = Counter((r["conversations"][0]["value"].split()[3], r["conversations"][1]["value"]) for r in kept
                      if r["category"] == "yesno")
    assert answers == {("a", "yes"): 10, ("a", "no"): 10, ("not", "no"): 10, ("not", "yes"): 10}
    assert [r for r in kept if r["category"] == "color"] == records[-5:]
    assert [r["id"] for r in kept if r["conversations"][1]["value"] == "yes" and r["id"] < 100] == list(range(0, 80, 8))
    assert kept == balance(records, seed=0) != balance(records, seed=1)
    halved = balance(records + [record(300 + i, "what shape is it?", "circle", "shape") for i in range(400)], 0, 0.5)
    assert 150 < sum(r["category"] != "yesno" for r in halved) < 250
    assert sum(r["category"] == "yesno" for r in halved) == 40  # the yes/no balance does not change
    fewer_negated = balance(records, 0, negated_fraction=0.5)
    answers = Counter((r["conversations"][0]["value"].split()[3], r["conversations"][1]["value"]) for r in fewer_negated
                      if r["category"] == "yesno")
    assert answers == {("a", "yes"): 10, ("a", "no"): 10, ("not", "no"): 5, ("not", "yes"): 5}
    assert [is_negated(q) for q in ("Is no teal shape present?", "does the image not contain a circle?",
                                    "is there a notebook?", "Is there a red shape?")] == [True, True, False, False]
    masked = question_type("<image>\nDoes the image not contain a Triangle?")
    assert masked == "<image>\ndoes the image not contain a {shape}?"


def test_paired_order_puts_each_yes_no_question_beside_its_complement_with_the_other_answer():
    records = [record(i, f"is there a {('red', 'blue')[i % 2]} shape?", "yes" if i < 6 else "no") for i in range(14)]
    records += [record(100 + i, "what color is the shape?", "red", "color") for i in range(5)]
    ordered = paired_order(records, seed=0)
    assert sorted(r["id"] for r in ordered) == sorted(r["id"] for r in records)
    pairs = [(ordered[i], ordered[i + 1]) for i in range(0, len(ordered) - 1, 2)]
    complementary = [(a, b) for a, b in pairs if a["category"] == b["category"] == "yesno"
                     and a["conversations"][0] == b["conversations"][0]]
    assert len(complementary) == 6  # 3 "yes" per question, each paired with a "no"
    assert all({a["conversations"][1]["value"], b["conversations"][1]["value"]} == {"yes", "no"}
               for a, b in complementary)
    assert ordered == paired_order(records, seed=0) != paired_order(records, seed=1)
