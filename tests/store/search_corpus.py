"""Blueprint texts shared by the search tests that compare two ways of answering one query: the
searched words whole, repeated, as a prefix (kubectl, kubernetes), CJK, café composed and
decomposed, and a blueprint without them."""

import unicodedata

TEXTS = [
    "steps:\n  - run: deploy build test\n",
    "steps:\n  - run: build then deploy\n  - run: kubectl apply\n",
    "steps:\n  - run: kubernetes deploy deploy deploy\n",
    "title: 東京都の天気\nsteps:\n  - run: deploy\n",
    "title: " + unicodedata.normalize("NFD", "café") + " build\n",
    "title: café deploy build\n",
    "steps:\n  - run: lint\n",
]
