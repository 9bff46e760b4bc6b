#!/usr/bin/env python3
"""Reference fixtures for insar-mm-eval, produced by the reference Python implementations.

Requirements: pycocoevalcap 1.2 (+ Java for its PTB tokenizer), numpy, scipy, scikit-learn.
Optional: a Python environment with SciPy <= 1.15 (--legacy-python) to record whether
pytorch-fid's eps retry triggers there.

    python3 evaluation/reference/make_fixtures.py [--captions PATH.json] [--legacy-python PY]

Writes evaluation/reference/fixtures/*.json and *.npy. Every number in them comes from
the reference code (pycocoevalcap scorers, pytorch-fid's calculate_frechet_distance with
scipy.linalg.sqrtm, torch-fidelity's KID formula, scikit-learn), never from insar-mm.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import scipy
import scipy.linalg
import sklearn
import sklearn.metrics as skm
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")


def dump(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------- captions
TRICKY = [
    "Can't stop, won't stop; don't.",
    "It's the volcano's flank (east) [a] {b}.",
    "\"quoted\" 'single' `tick`",
    "wave-like low-coherence 2019-2020 5-10 1,000 3.5 .5 mm/yr",
    "e.g. u.s. etc. mr. approx. Mr. Dr. St. vs. i.e.",
    "ends with etc.",
    "12% $5 x=y a+b >gt @home #tag & <tag> a<b",
    "wow!!! what?? hmm?! ok...",
    "it\u2019s \u201cquoted\u201d a\u2014b a\u2013b",
    "5 1/2 inches of uplift",
    "colour cannot gonna gotta wanna",
    "volcanoes' flank",
    "a,b a;b a:b 10:30 a/b a-b a--b -5 -word word- a.b ab.cd",
    "...",
    "",
    "  tab\there  ",
    "The InSAR shows 2 fringes.Next sentence",
    "It is 3.5km wide...and more",
    "C'mon I'd we'll they're I'm you've",
    "a*b a_b a~b a^b a|b",
    "a's b'S CAN'T",
    "3km 2nd 10th s1 abc123 1e5 3.5.6 3x 5cm/yr 10-km",
    "?!? !? .?",
    "1. 2) a) (i)",
    "I.e. E.g. e.g., Etc.,",
    "A. B. Sill. N.",
    "Mt. Etna Jan. Inc. Co. Ave. Fig. approx. ca. cf. et al. Prof. Gen. Sept. Oct. Jr.",
    "Deformation (Mogi source) of ~2 fringes; LOS uplift >= 3 cm.",
    "Low coherence, e.g. due to vegetation.",
    "Line\nbreak inside",
]


def ptb(captions):
    d = {i: [{"caption": c}] for i, c in enumerate(captions)}
    out = PTBTokenizer().tokenize(d)
    return [out[i][0] for i in range(len(captions))]


def score_sets(gts_raw, res_raw):
    """COCOEvalCap.evaluate without METEOR/SPICE: tokenize, then the three scorers."""
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in gts_raw.items()})
    res = tok.tokenize({k: [{"caption": res_raw[k]}] for k in gts_raw})
    out = {}
    per = {k: {} for k in gts}
    keys = list(gts.keys())
    b, bs = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out["Bleu_%d" % (n + 1)] = b[n]
        for k, v in zip(keys, bs[n]):
            per[k]["Bleu_%d" % (n + 1)] = v
    for name, scorer in [("ROUGE_L", Rouge()), ("CIDEr", Cider())]:
        s, ss = scorer.compute_score(gts, res)
        out[name] = float(s)
        for k, v in zip(keys, ss):
            per[k][name] = float(v)
    return out, per, gts, res


def caption_case(name, images, results, note):
    """images: list of (id, [refs]); results: list of (id, caption)."""
    refs = {
        "images": [{"id": i} for i, _ in images],
        "annotations": [
            {"image_id": i, "id": 1000 * n + j, "caption": c}
            for n, (i, caps) in enumerate(images)
            for j, c in enumerate(caps)
        ],
    }
    res = [{"image_id": i, "caption": c} for i, c in results]
    rid = {i for i, _ in results}
    gts_raw = {i: caps for i, caps in images if i in rid}
    res_raw = dict(results)
    scores, per, gts, tok_res = score_sets(gts_raw, res_raw)
    return {
        "name": name,
        "note": note,
        "refs": refs,
        "results": res,
        "scores": scores,
        "per_image": {str(k): v for k, v in per.items()},
        "tokenized_refs": {str(k): v for k, v in gts.items()},
        "tokenized_results": {str(k): v[0] for k, v in tok_res.items()},
    }


def captions_fixtures(real_captions):
    rng = np.random.RandomState(4)
    cases = []
    base = [
        (1, ["A deformation pattern is visible in the centre of the image.",
             "Deformation can be seen near the summit.",
             "The interferogram shows uplift at the volcano."]),
        (2, ["Low coherence in the north-west.", "No deformation activity can be detected."]),
        (3, ["Turbulent mixing effect or wave-like patterns can be detected.",
             "Atmospheric effects (turbulence) are visible."]),
        (4, ["Two fringes of uplift, e.g. a Mogi source."]),
        (5, ["The volcano's flank is deforming; it can't be atmospheric."]),
    ]
    cases.append(caption_case(
        "hard_cases",
        base,
        [(1, "A deformation pattern is visible in the centre of the image."),  # identical
         (2, ""),  # empty
         (3, "Turbulence"),  # one word
         (4, "two fringes"),  # shorter than 3-grams, partial
         (5, "The volcano's flank can't be deforming (probably)!")],
        "identical, empty, one-word, two-word candidates; punctuation and clitics",
    ))
    cases.append(caption_case(
        "one_image",
        [(7, ["Deformation is visible.", "A pattern of deformation."])],
        [(7, "Deformation is visible.")],
        "a one-image corpus: CIDEr is 0 (log 1 - log 1)",
    ))
    cases.append(caption_case(
        "single_reference_identical",
        [(1, ["uplift at the summit"]), (2, ["subsidence in the caldera"])],
        [(1, "uplift at the summit"), (2, "subsidence in the caldera")],
        "candidates identical to their only reference (CIDEr 10 each)",
    ))
    cases.append(caption_case(
        "string_ids_and_unused_reference",
        [("a", ["wave-like patterns"]), ("b", ["low coherence"]), ("c", ["no deformation"])],
        [("b", "low coherence areas"), ("a", "wave like patterns")],
        "string image ids; image 'c' has no result and is not evaluated",
    ))
    if real_captions:
        pool = sorted(set(real_captions))
        images, results = [], []
        for i in range(60):
            k = int(rng.randint(1, 4))
            refs = [pool[j] for j in rng.choice(len(pool), k, replace=False)]
            cand = pool[int(rng.randint(len(pool)))]
            if i % 5 == 0:
                cand = refs[0]
            elif i % 7 == 0:
                words = cand.split()
                cand = " ".join(words[: max(1, len(words) // 3)])
            images.append((100 + i, refs))
            results.append((100 + i, cand))
        cases.append(caption_case(
            "hephaestus_sample",
            images,
            results,
            "60 images, 1-3 real Hephaestus captions as references, real captions as candidates",
        ))
    dump("captions.json", cases)
    inputs = list(TRICKY)
    if real_captions:
        inputs += sorted(set(real_captions))
    dump("tokenizer.json", {"inputs": inputs, "outputs": ptb(inputs)})


# ---------------------------------------------------------------------------- FID / KID
def pytorch_fid(mu1, sigma1, mu2, sigma2, eps=1e-6, force_retry=False):
    """pytorch-fid 0.3.0 calculate_frechet_distance, verbatim logic (force_retry: take the
    eps branch unconditionally, as SciPy <= 1.15 does when sqrtm fails)."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if isinstance(covmean, tuple):
        covmean = covmean[0]
    retried = False
    if force_retry or not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if isinstance(covmean, tuple):
            covmean = covmean[0]
        retried = True
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)), retried


def stats(x):
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def kid_unbiased(x, y):
    """torch-fidelity mmd2 'unbiased' with the (x.y/d + 1)^3 kernel; works for unequal sizes
    (the full-set estimator)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.sum() / (m * n))


def legacy_retry(legacy_python, a_path, b_path):
    if not legacy_python:
        return None
    code = (
        "import numpy as np, scipy, scipy.linalg, sys\n"
        "a=np.load(sys.argv[1]).astype(np.float64); b=np.load(sys.argv[2]).astype(np.float64)\n"
        "s1=np.cov(a,rowvar=False); s2=np.cov(b,rowvar=False)\n"
        "c,_=scipy.linalg.sqrtm(s1.dot(s2),disp=False)\n"
        "print(scipy.__version__, int(not np.isfinite(c).all()))\n"
    )
    out = subprocess.run([legacy_python, "-c", code, a_path, b_path], capture_output=True, text=True, check=True)
    version, failed = out.stdout.split()
    return {"scipy": version, "sqrtm_failed": bool(int(failed))}


def fid_fixtures(legacy_python):
    rng = np.random.RandomState(2024)
    cases = []

    def case(name, a, b, note, dtype=np.float64):
        pa, pb = name + "_real.npy", name + "_fake.npy"
        np.save(os.path.join(OUT, pa), a.astype(dtype))
        np.save(os.path.join(OUT, pb), b.astype(dtype))
        a = np.load(os.path.join(OUT, pa)).astype(np.float64)
        b = np.load(os.path.join(OUT, pb)).astype(np.float64)
        m1, s1 = stats(a)
        m2, s2 = stats(b)
        fid, retried = pytorch_fid(m1, s1, m2, s2)
        fid_retry, _ = pytorch_fid(m1, s1, m2, s2, force_retry=True)
        idx1 = rng.choice(a.shape[0], min(a.shape[0], b.shape[0]) // 2, replace=False)
        idx2 = rng.choice(b.shape[0], min(a.shape[0], b.shape[0]) // 2, replace=False)
        cases.append({
            "name": name,
            "note": note,
            "real": pa,
            "fake": pb,
            "fid_scipy_sqrtm": fid,
            "scipy_retried": retried,
            "fid_eps_retry": fid_retry,
            "legacy": legacy_retry(legacy_python, os.path.join(OUT, pa), os.path.join(OUT, pb)),
            "kid_full": kid_unbiased(a, b),
            "kid_subset_idx_real": idx1.tolist(),
            "kid_subset_idx_fake": idx2.tolist(),
            "kid_subset": kid_unbiased(a[idx1], b[idx2]),
        })

    a = rng.randn(300, 16) @ rng.randn(16, 16)
    b = rng.randn(250, 16) @ rng.randn(16, 16) + 0.3
    case("full_rank", a, b, "n > d, full-rank covariances, unequal n")
    case("full_rank_f32", a, b, "the same features stored as float32", dtype=np.float32)
    case("n_less_than_d", rng.randn(12, 40) * 2.0, rng.randn(15, 40) + 0.5, "n < d: rank-deficient covariances")
    # SciPy <= 1.15's sqrtm fails erratically on such inputs; this draw makes it fail.
    r0 = np.random.RandomState(0)
    a = r0.randn(100, 12)
    b = r0.randn(120, 12)
    a[:, 3] = 0.5
    a[:, 4] = 0.5
    b[:, 8] = -1.0
    case("constant_columns", a, b, "constant ('dead') features in different columns of each set")
    a = rng.randn(80, 10)
    b = rng.randn(90, 10) + 1.0
    a[:, 2] = 1.0
    b[:, 2] = 3.0
    case("shared_constant_column", a, b, "the same constant column in both sets")
    a = rng.randn(50, 8)
    case("identical", a, a.copy(), "a set against itself (FID ~ 0)")
    dump("fid.json", {"scipy": scipy.__version__, "numpy": np.__version__, "cases": cases})


# ---------------------------------------------------------------------------- retrieval
def retrieval_fixtures():
    rng = np.random.RandomState(7)
    nq, ng = 40, 200
    sim = rng.randn(nq, ng)
    relevant = []
    for q in range(nq):
        k = int(rng.randint(1, 6))
        rel = sorted(rng.choice(ng, k, replace=False).tolist())
        sim[q, rel] += rng.rand() * 3
        relevant.append(rel)
    np.save(os.path.join(OUT, "retrieval_similarity.npy"), sim)
    ranks, aps = [], []
    for q in range(nq):
        order = np.argsort(-sim[q], kind="stable")
        pos = [int(np.where(order == r)[0][0]) for r in relevant[q]]
        ranks.append(min(pos))
        y = np.zeros(ng)
        y[relevant[q]] = 1
        aps.append(skm.average_precision_score(y, sim[q]))
    ranks = np.array(ranks)
    dump("retrieval.json", {
        "similarity": "retrieval_similarity.npy",
        "relevant": relevant,
        "R@1": float(np.mean(ranks < 1)),
        "R@5": float(np.mean(ranks < 5)),
        "R@10": float(np.mean(ranks < 10)),
        "medr": float(np.floor(np.median(ranks)) + 1),
        "meanr": float(ranks.mean() + 1),
        "mAP": float(np.mean(aps)),
        "ranks": ranks.tolist(),
    })


# ---------------------------------------------------------------------------- classification
def classification_fixtures():
    rng = np.random.RandomState(11)
    out = {"sklearn": sklearn.__version__}
    # Multi-label, 10 classes; class 9 never true; scores rounded to create ties.
    n, c = 120, 10
    y = (rng.rand(n, c) < 0.3).astype(np.int64)
    y[:, 9] = 0
    s = np.clip(y * 0.35 + rng.rand(n, c) * 0.65, 0, 1).round(2)
    np.save(os.path.join(OUT, "cls_multi_scores.npy"), s.astype(np.float32))
    np.save(os.path.join(OUT, "cls_multi_labels.npy"), y)
    s = np.load(os.path.join(OUT, "cls_multi_scores.npy")).astype(np.float64)
    pred = (s >= 0.5).astype(np.int64)
    p, r, f, sup = skm.precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    ap = [skm.average_precision_score(y[:, k], s[:, k]) if y[:, k].any() else None for k in range(c)]
    auc = [skm.roc_auc_score(y[:, k], s[:, k]) if 0 < y[:, k].sum() < n else None for k in range(c)]
    out["multi"] = {
        "scores": "cls_multi_scores.npy",
        "labels": "cls_multi_labels.npy",
        "threshold": 0.5,
        "precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "support": sup.tolist(),
        "ap": ap, "auroc": auc,
        "averages": {
            avg: list(skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)[:3])
            for avg in ["macro", "micro", "weighted", "samples"]
        },
        "subset_accuracy": skm.accuracy_score(y, pred),
        "confusion": skm.multilabel_confusion_matrix(y, pred).tolist(),
    }
    # Single-label, 5 classes; class 4 never true (but predicted sometimes).
    n, c = 90, 5
    yt = rng.randint(0, 4, n)
    sc = rng.rand(n, c)
    sc[np.arange(n), yt] += 0.4
    np.save(os.path.join(OUT, "cls_single_scores.npy"), sc)
    np.save(os.path.join(OUT, "cls_single_labels.npy"), yt.astype(np.int32))
    yp = sc.argmax(1)
    labels = list(range(c))
    p, r, f, sup = skm.precision_recall_fscore_support(yt, yp, labels=labels, average=None, zero_division=0)
    onehot = np.eye(c)[yt]
    out["single"] = {
        "scores": "cls_single_scores.npy",
        "labels": "cls_single_labels.npy",
        "precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "support": sup.tolist(),
        "ap": [skm.average_precision_score(onehot[:, k], sc[:, k]) if onehot[:, k].any() else None for k in range(c)],
        "auroc": [skm.roc_auc_score(onehot[:, k], sc[:, k]) if 0 < onehot[:, k].sum() < n else None for k in range(c)],
        "averages": {
            avg: list(skm.precision_recall_fscore_support(yt, yp, labels=labels, average=avg, zero_division=0)[:3])
            for avg in ["macro", "micro", "weighted"]
        },
        "accuracy": skm.accuracy_score(yt, yp),
        "confusion": skm.confusion_matrix(yt, yp, labels=labels).tolist(),
    }
    dump("classification.json", out)


# ---------------------------------------------------------------------------- segmentation
def segmentation_fixtures():
    rng = np.random.RandomState(5)
    k, ignore = 7, 255
    preds, gts = [], []
    for _ in range(3):
        g = rng.randint(0, 5, (9, 11))  # classes 5 and 6 never in the truth
        g[rng.rand(9, 11) < 0.1] = ignore
        p = np.where(rng.rand(9, 11) < 0.7, np.where(g == ignore, 0, g), rng.randint(0, 6, (9, 11)))
        preds.append(p.tolist())
        gts.append(g.tolist())
    cm = np.zeros((k, k), dtype=np.int64)
    for p, g in zip(preds, gts):
        p, g = np.array(p), np.array(g)
        m = g != ignore
        cm += skm.confusion_matrix(g[m], p[m], labels=list(range(k)))
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (cm.sum(0) + cm.sum(1) - tp)
        dice = 2 * tp / (cm.sum(0) + cm.sum(1))
        acc = tp / cm.sum(1)
    nn = lambda v: [None if np.isnan(x) else float(x) for x in v]
    dump("segmentation.json", {
        "num_classes": k, "ignore_index": ignore, "preds": preds, "gts": gts,
        "confusion": cm.tolist(), "IoU": nn(iou), "Dice": nn(dice), "Acc": nn(acc),
        "mIoU": float(np.nanmean(iou)), "mDice": float(np.nanmean(dice)), "mAcc": float(np.nanmean(acc)),
        "aAcc": float(tp.sum() / cm.sum()),
    })


# ---------------------------------------------------------------------------- npy
def npy_fixtures():
    a = np.arange(12, dtype=np.float64).reshape(3, 4) / 8 - 0.5
    np.save(os.path.join(OUT, "npy_f8.npy"), a)
    np.save(os.path.join(OUT, "npy_f4_fortran.npy"), np.asfortranarray(a.astype(np.float32)))
    np.save(os.path.join(OUT, "npy_i8_1d.npy"), np.array([3, -1, 7], dtype=np.int64))
    np.save(os.path.join(OUT, "npy_bool.npy"), np.array([[True, False], [False, True]]))
    np.save(os.path.join(OUT, "npy_be_f8.npy"), a.astype(">f8"))
    np.savez(os.path.join(OUT, "stats_numpy.npz"), mu=a[0], sigma=np.eye(4) * 2.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", help="JSON list of real captions (e.g. the Hephaestus captions)")
    ap.add_argument("--legacy-python", help="a python with SciPy <= 1.15 for the sqrtm-failure record")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    real = json.load(open(args.captions)) if args.captions else []
    captions_fixtures(real)
    fid_fixtures(args.legacy_python)
    retrieval_fixtures()
    classification_fixtures()
    segmentation_fixtures()
    npy_fixtures()
    print("fixtures written to", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
