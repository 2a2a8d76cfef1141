"""Questions a user would ask of real documents of ../shared/corpus (written without reading the
answerer), for `bench answers --sets corpus`. Each answerable question names the corpus file it is
about and one or more short phrases (or figures) that a correct answer must contain, copied from
the document's text as extracted; then questions that none of these documents answers."""

from __future__ import annotations

from pathlib import Path

#: Beside the project in CI and development, not in a user's clone.
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"

# (file path relative to ../shared/corpus, question, (phrase, ...))
QUESTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # IRS Instructions for Form 1040NR (2007), 50 pages: questions from all over the document.
    ("pdf/i1040nr.pdf", "Who has to file Form 1040-NR?", ("trade or business",)),
    (
        "pdf/i1040nr.pdf",
        "What is the alternative minimum tax exemption amount for 2007?",
        ("$33,750",),
    ),
    (
        "pdf/i1040nr.pdf",
        "How many days do I have to be in the US to count as a resident under the substantial "
        "presence test?",
        ("31 days", "183 days"),
    ),
    ("pdf/i1040nr.pdf", "What is the green card test?", ("lawful permanent resident",)),
    (
        "pdf/i1040nr.pdf",
        "Do I still have to file if my only US income was a small amount of wages?",
        ("$3,400",),
    ),
    (
        "pdf/i1040nr.pdf",
        "My kid is under 18 and only has some interest and dividends. Can I report that on my "
        "own return?",
        ("Form 8814",),
    ),
    (
        "pdf/i1040nr.pdf",
        "When is my 1040-NR due if I got a paycheck with tax withheld?",
        ("April 15, 2008",),
    ),
    (
        "pdf/i1040nr.pdf",
        "If you did not receive wages as an employee subject to U.S. income tax withholding, by "
        "what date is the return for the 2007 calendar year due?",
        ("June 16, 2008",),
    ),
    ("pdf/i1040nr.pdf", "Where do I mail my 1040NR?", ("Austin",)),
    (
        "pdf/i1040nr.pdf",
        "Where does a nonresident alien estate or trust file Form 1040NR?",
        ("Cincinnati",),
    ),
    (
        "pdf/i1040nr.pdf",
        "I can't get my return done by the deadline. How do I get more time?",
        ("Form 4868",),
    ),
    (
        "pdf/i1040nr.pdf",
        "What should be entered across the top of the return for a dual-status year?",
        ("Dual-Status Return",),
    ),
    (
        "pdf/i1040nr.pdf",
        "At what rate is income that is not effectively connected with a U.S. trade or business "
        "taxed for the period of nonresidence?",
        ("30%",),
    ),
    ("pdf/i1040nr.pdf", "How long does it take to get an ITIN?", ("6 weeks",)),
    ("pdf/i1040nr.pdf", "Can I claim my children as dependents?", ("Canada", "Mexico")),
    (
        "pdf/i1040nr.pdf",
        "How old can a child be and still count for the child tax credit?",
        ("17",),
    ),
    (
        "pdf/i1040nr.pdf",
        "If you were not a degree candidate, how much of a scholarship or fellowship grant is "
        "taxable?",
        ("full amount",),
    ),
    (
        "pdf/i1040nr.pdf",
        "How long do I have to roll over an IRA distribution?",
        ("60 days",),
    ),
    (
        "pdf/i1040nr.pdf",
        "I'm a teacher. How much of what I spent on classroom supplies can I deduct?",
        ("$250",),
    ),
    (
        "pdf/i1040nr.pdf",
        "What is the exemption amount per exemption for 2007?",
        ("$3,400",),
    ),
    (
        "pdf/i1040nr.pdf",
        "Who do I make my check out to when I pay?",
        ("United States Treasury",),
    ),
    (
        "pdf/i1040nr.pdf",
        "I paid $70 for a charity dinner that was worth $40. How much can I deduct?",
        ("$30",),
    ),
    (
        "pdf/i1040nr.pdf",
        "How much of my US social security benefits is taxable?",
        ("85%",),
    ),
    (
        "pdf/i1040nr.pdf",
        "What's the penalty for filing my return late?",
        ("5%",),
    ),
    ("pdf/i1040nr.pdf", "How long should I keep my tax records?", ("3 years",)),
    # Form 1040NR (2007) itself.
    ("pdf/f1040nr.pdf", "What is the OMB number of Form 1040NR?", ("1545-0074",)),
    (
        "pdf/f1040nr.pdf",
        "What do I need to attach when I report scholarship income on the form?",
        ("1042-S",),
    ),
    (
        "pdf/f1040nr.pdf",
        "Above what adjusted gross income may my itemized deductions be limited?",
        ("$156,400",),
    ),
    # Rig procedure 240-DOP-1013A.
    (
        "docx/240-DOP-1013A Lay Down Tubulars.docx",
        "Where is the lay down tubulars job performed?",
        ("Rig Floor",),
    ),
    (
        "docx/240-DOP-1013A Lay Down Tubulars.docx",
        "What personal protective equipment is specific to laying down tubulars?",
        ("Safety Harness",),
    ),
    (
        "docx/240-DOP-1013A Lay Down Tubulars.docx",
        "How do we check that the elevators and slips are the right size?",
        ("calipers",),
    ),
    (
        "docx/240-DOP-1013A Lay Down Tubulars.docx",
        "What does the corrective action from the 2013 incident say to use to separate tubulars?",
        ("rope stubs",),
    ),
    # Course schedule.
    (
        "docx/Weekly Schedule.docx",
        "How much of the grade is the final exam worth?",
        ("20%",),
    ),
    ("docx/Weekly Schedule.docx", "Where are the exams held?", ("GL 263",)),
    ("docx/Weekly Schedule.docx", "Which textbook does the course use?", ("Blitzer",)),
    (
        "docx/Weekly Schedule.docx",
        "Which sections does Test 3 cover?",
        ("2.7, 3.5, 3.6",),
    ),
    # OCR of a Civil War diary.
    (
        "pdf/Seige_of_Vicksburg_Sample_OCR.pdf",
        "How much were the soldiers paid a month?",
        ("thirteen dollars",),
    ),
    (
        "pdf/Seige_of_Vicksburg_Sample_OCR.pdf",
        "How many oxen did it take to haul each of the large siege guns?",
        ("ten yoke",),
    ),
    (
        "pdf/Seige_of_Vicksburg_Sample_OCR.pdf",
        "Where were the people of Vicksburg living during the bombardment?",
        ("caves",),
    ),
    ("pdf/Seige_of_Vicksburg_Sample_OCR.pdf", "What is canister shot?", ("tin cylinder",)),
    # GeoBase National Hydro Network data model.
    (
        "pdf/GeoBase_NHNC1_Data_Model_UML_EN.pdf",
        "Which packages make up the NHNC1 model?",
        ("Hydro Network", "Hydrographic", "Hydro Events", "Metadata"),
    ),
    (
        "pdf/GeoBase_NHNC1_Data_Model_UML_EN.pdf",
        "What was the object metadata attribute 'date' renamed to?",
        ("validity_date",),
    ),
    (
        "pdf/GeoBase_NHNC1_Data_Model_UML_EN.pdf",
        "How is a Linear Event defined?",
        ("starting and ending measurement",),
    ),
    (
        "pdf/GeoBase_NHNC1_Data_Model_UML_EN.pdf",
        "What's the toll-free number for GeoGratis client services?",
        ("1-800-661-2638",),
    ),
    # VA notice of intent and performance work statement.
    (
        "docx/invalid_tag_name.docx",
        "Which company is the VA awarding the coaching contract to?",
        ("Heads-Up Performance",),
    ),
    (
        "docx/invalid_tag_name.docx",
        "Who do I contact to respond to the notice of intent?",
        ("Postell",),
    ),
    (
        "docx/invalid_tag_name.docx",
        "How many hours of coaching experience must the contractor have?",
        ("2,500 hours",),
    ),
    (
        "docx/invalid_tag_name.docx",
        "How many days on-site are planned for the base year?",
        ("12 days",),
    ),
)
# questions that none of the files above answers (plausible for someone holding these documents)
UNANSWERABLE: tuple[str, ...] = (
    "What is the personal exemption amount for tax year 2015?",
    "What is the filing deadline for California Form 540NR?",
    "What is the treaty withholding rate on dividends paid to a resident of Germany?",
    "How do I report cryptocurrency gains on Form 1040-NR?",
    "Which tax software can I use to e-file Form 1040-NR?",
    "Do I need to file an FBAR for my foreign bank accounts?",
    "How much is the visa application fee for an F-1 student visa?",
    "Who was the IRS Commissioner when these instructions were issued?",
    "What make-up torque should the iron roughneck apply to drill pipe connections?",
    "What are the instructor's office hours for the Spring 2026 class?",
    "On what date did Vicksburg surrender to Grant?",
    "Who wrote the diary about the siege of Vicksburg?",
    "Which datum and map projection does the National Hydro Network data use?",
    "What is the total dollar value of the VA coaching contract?",
    "What's a good recipe for banana bread?",
)


def documents() -> dict[str, bytes]:
    """The files the questions are about, by file name (read from :data:`CORPUS`)."""
    return {Path(name).name: (CORPUS / name).read_bytes()
            for name in dict.fromkeys(name for name, _, _ in QUESTIONS)}
