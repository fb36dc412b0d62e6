"""strip_labels: labels go where they are labels (line start, optional markdown, colon); prose stays."""

import pytest

from pygpt_hf.labels import DEFAULT_LABELS, strip_labels


def test_dolly_style_dump_loses_its_section_labels():
    dump = (
        "### Instruction:\nName a primary colour.\n\n"
        "### Context:\nPainters mix colours.\n\n"
        "### Response:\nBlue.\n"
    )
    assert strip_labels(dump) == "Name a primary colour.\n\nPainters mix colours.\n\nBlue.\n"


@pytest.mark.parametrize("line, expected", [
    ("Instruction: Add the numbers.", "Add the numbers."),
    ("Input: 2 and 3", "2 and 3"),
    ("Output:5", "5"),
    ("  Response:   Blue.", "Blue."),                      # indentation and extra spaces
    ("## Response: Blue.", "Blue."),                       # markdown heading
    ("> Context: quoted", "quoted"),                       # markdown quote
    ("**Response:** Blue.", "Blue."),                      # bold, colon inside
    ("**Response**: Blue.", "Blue."),                      # bold, colon outside
    ("__Input__: x", "x"),
    ("Response : Blue.", "Blue."),                         # space before the colon
    ("RESPONSE: Blue.", "Blue."),                          # any case, by default
    ("response: blue", "blue"),
])
def test_a_label_at_the_start_of_a_line_is_removed(line, expected):
    assert strip_labels(line) == expected


@pytest.mark.parametrize("text", [
    "The output: was fine",                  # label word mid-line, even with a colon
    "Please give input to the form.",        # label word without a colon
    "Input devices include keyboards.",      # at the start of a line, but no colon: prose
    "Outputs: 3",                            # a longer word is not the label
    "Input/Output: a textbook chapter",      # not the label followed by a colon
    "Contextual: nope",
    "We asked for a response: none came.",
    "See the ### Response: heading below",   # markdown, but not at the start of the line
    "- Response: in a list item",            # list items are content, not dump labels
])
def test_label_words_used_as_prose_stay(text):
    assert strip_labels(text) == text


def test_only_label_lines_change_in_a_mixed_document():
    text = (
        "Instruction: Summarise the log.\n"
        "The output: was fine, said the operator.\n"
        "Please give input to the form.\n"
        "Response:\n"
        "All systems nominal.\n"
    )
    assert strip_labels(text) == (
        "Summarise the log.\n"
        "The output: was fine, said the operator.\n"
        "Please give input to the form.\n"
        "All systems nominal.\n"
    )


def test_windows_line_endings_and_a_label_on_the_last_line():
    assert strip_labels("Instruction:\r\nDo it.\r\nResponse:\r\nDone.") == "Do it.\r\nDone."
    assert strip_labels("Text first.\n### Response:") == "Text first.\n"


def test_case_handling_can_be_strict():
    text = "Response: kept?\nresponse: lower\nRESPONSE: upper"
    assert strip_labels(text, ignore_case=False) == "kept?\nresponse: lower\nRESPONSE: upper"
    assert strip_labels(text) == "kept?\nlower\nupper"


def test_the_label_list_is_configurable():
    text = "Question: What is 2 + 2?\nAnswer: 4\nResponse: stays, not in the list"
    assert strip_labels(text, labels=["Question", "Answer"]) == "What is 2 + 2?\n4\nResponse: stays, not in the list"
    assert strip_labels("Human: hi\nAI (v2): hello", labels=("AI (v2)",)) == "Human: hi\nhello"  # regex characters are literal
    assert DEFAULT_LABELS == ("Instruction", "Input", "Output", "Response", "Context")
    with pytest.raises(ValueError, match="labels must be non-empty strings"):
        strip_labels("x", labels=["Input", ""])
