"""Checkpoints of the lesson's story (steps 5-7): the plates separate on the autoencoder's map, a
classifier of the plates looks at the background, and masking the background mixes the plates
while the treatment stays visible. Each reads accuracies measured on images the classifier never
saw, next to the chance level."""

from __future__ import annotations

from core.lesson.checkpoints import Check, Result, checkpoint, not_determined, number


def _acc(value: float, chance: float) -> str:
    return f"{value:.2f} balanced accuracy on unseen images (chance {chance:.2f})"


@checkpoint("plates_separate")
def plates_separate(result: Result, *, min_margin: float = 0.2) -> Check:
    """The plate is predicted from the cells' features well above chance (by image)."""
    acc, chance = number(result["batch_accuracy"]), number(result["chance"])
    if acc is None or chance is None:
        return not_determined("the plate accuracy")
    shuffled = number(result.get("shuffled"))
    passed = acc >= chance + min_margin and (shuffled is None or acc > shuffled)
    beyond = f"; shuffled plate labels reach {shuffled:.2f}" if shuffled is not None else ""
    if passed:
        return Check(True, acc, f"The plate is read from the autoencoder's features at {_acc(acc, chance)}{beyond}: "
                                "the map groups the cells by plate.")
    return Check(False, acc, f"The plate is read at only {_acc(acc, chance)}{beyond}; the plates do not separate "
                             f"here (the lesson expects at least {chance + min_margin:.2f}).")


@checkpoint("looks_at_background")
def looks_at_background(result: Result, *, max_enrichment: float = 0.8, min_margin: float = 0.15) -> Check:
    """The plate classifier works, and its CAM energy inside the cells is well below the cells' area share."""
    acc, chance = number(result["accuracy"]), number(result["chance"])
    inside, area = number(result["median_inside"]), number(result["median_area"])
    if None in (acc, chance, inside, area) or not area:
        return not_determined("the CAMs' inside-mask share")
    ratio = inside / area
    numbers = f"median inside-mask share {inside:.2f} where the cells cover {area:.2f} of the crop"
    if acc < chance + min_margin:
        return Check(False, ratio, f"The classifier hardly tells the plates apart ({_acc(acc, chance)}): its CAMs "
                                   f"explain guesses ({numbers}).")
    if ratio <= max_enrichment:
        return Check(True, ratio, f"The classifier tells the plates apart ({_acc(acc, chance)}) by looking at the "
                                  f"background: {numbers}, {ratio:.2f} of what the cells' area predicts.")
    return Check(False, ratio, f"The CAMs are not on the background ({numbers}, {ratio:.2f} of the area's share; the "
                               f"lesson expects at most {max_enrichment:.2f}).")


@checkpoint("plates_mix_treatment_stays")
def plates_mix_treatment_stays(result: Result, *, batch_margin: float = 0.15, condition_margin: float = 0.25) -> Check:
    """With the background masked the plate is read at about chance, the condition well above it."""
    batch, condition = number(result["batch_accuracy"]), number(result["condition_accuracy"])
    chance = number(result["chance"])
    if None in (batch, condition, chance):
        return not_determined("the accuracies with the background masked")
    before = number(result.get("batch_accuracy_before"))
    was = f" (was {before:.2f} with the background)" if before is not None else ""
    text = (f"Background masked: the plate is read at {batch:.2f}{was}, the condition at {condition:.2f}, on unseen "
            f"images (chance {chance:.2f}).")
    if batch > chance + batch_margin:
        return Check(False, batch, text + f" The plates still separate (the lesson expects at most "
                                          f"{chance + batch_margin:.2f}).")
    if condition < chance + condition_margin:
        return Check(False, batch, text + f" The treatment is lost too (the lesson expects at least "
                                          f"{chance + condition_margin:.2f}).")
    below = (" Below chance is chance too: with a few images per plate, a classifier that learned nothing lands on "
             "either side of it." if batch < chance - 0.05 else "")
    return Check(True, batch, text + " The batch effect is gone; the biology stays." + below)
