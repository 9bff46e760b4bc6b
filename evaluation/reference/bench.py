#!/usr/bin/env python3
"""Benchmark inputs and the Python reference timings (not a test).

    python3 evaluation/reference/bench.py captions OUT_DIR CAPTIONS.json   # 5000 images x 5 refs
    python3 evaluation/reference/bench.py fid OUT_DIR                      # 10000 x 2048 features
    python3 evaluation/reference/bench.py fid-time OUT_DIR                 # time again on them

`captions` writes OUT_DIR/refs.json and OUT_DIR/results.json, then times pycocoevalcap
end to end (loading, PTB tokenization, Bleu(4), Rouge, Cider; METEOR and SPICE are left
out because insar-mm does not compute them) and writes OUT_DIR/pycocoevalcap_scores.json.
`fid` writes OUT_DIR/real.npy and OUT_DIR/fake.npy (float32) and times pytorch-fid's
computation (np.cov + scipy.linalg.sqrtm), writing OUT_DIR/scipy_fid.json.
Then time `insar-mm eval captions|fid` on the same files.
"""
import json
import os
import sys
import time

import numpy as np


def captions(out, caps_path):
    from pycocotools.coco import COCO
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    rng = np.random.RandomState(0)
    pool = sorted(set(json.load(open(caps_path))))
    words = sorted({w for c in pool for w in c.split()})

    def perturb(c):
        w = c.split()
        for _ in range(rng.randint(0, 4)):
            op = rng.randint(3)
            k = rng.randint(len(w)) if w else 0
            if op == 0 and w:
                del w[k]
            elif op == 1:
                w.insert(k, words[rng.randint(len(words))])
            elif w:
                w[k] = words[rng.randint(len(words))]
        return " ".join(w)

    images, anns, res = [], [], []
    for i in range(5000):
        images.append({"id": i})
        base = pool[rng.randint(len(pool))]
        for j in range(5):
            anns.append({"image_id": i, "id": 5 * i + j, "caption": perturb(base)})
        res.append({"image_id": i, "caption": perturb(pool[rng.randint(len(pool))] if i % 3 else base)})
    os.makedirs(out, exist_ok=True)
    refs_path, res_path = os.path.join(out, "refs.json"), os.path.join(out, "results.json")
    json.dump({"images": images, "annotations": anns}, open(refs_path, "w"))
    json.dump(res, open(res_path, "w"))

    t0 = time.time()
    coco = COCO(refs_path)
    coco_res = coco.loadRes(res_path)
    ids = coco_res.getImgIds()
    gts = {i: coco.imgToAnns[i] for i in ids}
    rs = {i: coco_res.imgToAnns[i] for i in ids}
    tok = PTBTokenizer()
    gts, rs = tok.tokenize(gts), tok.tokenize(rs)
    scores = {}
    b, _ = Bleu(4).compute_score(gts, rs, verbose=0)
    for n in range(4):
        scores["Bleu_%d" % (n + 1)] = b[n]
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, rs)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, rs)[0])
    scores["seconds"] = time.time() - t0
    json.dump(scores, open(os.path.join(out, "pycocoevalcap_scores.json"), "w"), indent=1)
    print(json.dumps(scores, indent=1))


def fid(out):
    import scipy.linalg

    rng = np.random.RandomState(1)
    d, n = 2048, 10000
    mix = rng.randn(d, d).astype(np.float32) / np.sqrt(d)
    real = np.maximum(rng.randn(n, d).astype(np.float32) @ mix, 0)
    fake = np.maximum((rng.randn(n, d).astype(np.float32) * 1.1 + 0.05) @ mix, 0)
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "real.npy"), real)
    np.save(os.path.join(out, "fake.npy"), fake)
    fid_time(out)


def fid_time(out):
    import scipy.linalg

    c0 = time.process_time()
    t0 = time.time()
    a = np.load(os.path.join(out, "real.npy")).astype(np.float64)
    b = np.load(os.path.join(out, "fake.npy")).astype(np.float64)
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    t1 = time.time()
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    if isinstance(covmean, tuple):
        covmean = covmean[0]
    covmean = covmean.real
    diff = mu1 - mu2
    value = float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    t2 = time.time()
    r = {"fid": value, "seconds_total": t2 - t0, "seconds_stats": t1 - t0, "seconds_sqrtm": t2 - t1,
         "cpu_seconds": time.process_time() - c0, "scipy": scipy.__version__}
    json.dump(r, open(os.path.join(out, "scipy_fid.json"), "w"), indent=1)
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "captions":
        captions(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "fid-time":
        fid_time(sys.argv[2])
    else:
        fid(sys.argv[2])
