#!/usr/bin/python3
"""torchvision references for the detection pieces of nn/detect.c and engine/op_roi_align.c.

Writes tests/ref/data/heads.h5 (torch 1.13, torchvision 0.14; every value float32 as computed by
torchvision on CPU, since the semantics matched include float32 coordinate arithmetic):

  roi_align/<case>/  x, rois (K, 5), y, R, gx = d sum(y * R) / dx,
                     args = (out_h, out_w, spatial_scale, sampling_ratio, aligned)
  nms/<case>/        boxes, scores, thresh, keep (int32)          torchvision.ops.nms
  batched_nms/       boxes, scores, groups, thresh, keep          torchvision.ops.batched_nms
  iou/               a, b, iou                                    torchvision.ops.box_iou
  coder/             ref, gt, deltas_1111, deltas_10_10_5_5 (BoxCoder.encode_single),
                     rel (large dw/dh: the log(1000/16) clamp), dec_1111, dec_10_10_5_5 (decode_single)
  anchors/           image (h, w), grids (L, 2), sizes, ratios, anchors (sum HWA, 4)
                     AnchorGenerator(((32, 64, 128),) * 5, ((0.5, 1, 2),) * 5)
  matcher/           iou (G, P) with ties and a gt whose best IoU is low, high, low,
                     m_low (allow_low_quality_matches=True), m_plain (False)
  fpn/               in0..in3, weights of FeaturePyramidNetwork + LastLevelMaxPool, out0..out4
  det/               a whole RPN + RoIHeads (fpn_ch 8, rep 32) on given level maps f0..f4
                     (3 images of 64 x 64, the third without boxes):
                     weights  rpn.* and roi.* (torchvision names), gt boxes + counts
                     train    samplers that take every anchor / RoI (batch >= count, positive
                              fraction 1), so the losses are deterministic: loss_objectness,
                              loss_rpn_box_reg, loss_classifier, loss_box_reg and the gradients of
                              their sum w.r.t. every weight (g.<name>) and every level map (gf0..gf4)
                     eval     detections per image (boxes, scores) after score > 0.05, NMS 0.5

Run from the repository root:  /usr/bin/python3 tests/ref/heads.py
"""
import os
from collections import OrderedDict

import h5py
import numpy as np
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "heads.h5")


def put(g, name, a):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.dtype.kind == "f":
        a = a.astype(np.float32)
    elif a.dtype.kind in "iub":
        a = a.astype(np.int32)
    g.create_dataset(name, data=a)


def rand_boxes(n, size, minw=1.0, maxw=None):
    maxw = maxw or size / 2
    xy = torch.rand(n, 2) * size
    wh = minw + torch.rand(n, 2) * (maxw - minw)
    return torch.cat([xy, xy + wh], 1)


def roi_case(f, name, x_shape, rois, out, scale, sampling, aligned):
    x = torch.randn(*x_shape, requires_grad=True)
    y = torchvision.ops.roi_align(x, rois, out, spatial_scale=scale, sampling_ratio=sampling, aligned=aligned)
    R = torch.randn(*y.shape)
    (gx,) = torch.autograd.grad((y * R).sum(), [x])
    g = f.create_group("roi_align/" + name)
    put(g, "x", x), put(g, "rois", rois), put(g, "y", y), put(g, "R", R), put(g, "gx", gx)
    put(g, "args", np.array([out[0], out[1], scale, sampling, int(aligned)], np.float32))


def roi_cases(f):
    # boxes inside, crossing every border, smaller than a bin, and degenerate; two images
    rois = torch.tensor([
        [0, 4.0, 6.0, 30.0, 22.0],
        [1, -6.0, -3.0, 12.0, 9.0],
        [0, 40.0, 30.0, 52.0, 47.5],
        [1, 10.3, 12.7, 11.1, 13.2],      # under one feature pixel
        [0, 20.0, 20.0, 20.0, 20.0],      # zero size
        [1, 0.0, 0.0, 48.0, 40.0],        # the whole map
        [0, 33.5, 2.25, 60.0, 19.75],     # past the right edge
    ])
    roi_case(f, "scale025_s2", (2, 3, 10, 12), rois, (7, 7), 0.25, 2, False)
    roi_case(f, "scale05_adaptive", (2, 3, 20, 24), rois, (7, 7), 0.5, -1, False)
    roi_case(f, "scale0125_s2_3x4", (2, 2, 5, 6), rois, (3, 4), 0.125, 2, False)
    roi_case(f, "scale025_aligned", (2, 3, 10, 12), rois, (5, 5), 0.25, 2, True)
    # many boxes on one image (the parallel backward's ordering)
    many = torch.cat([torch.zeros(24, 1), rand_boxes(24, 40.0, 2.0, 30.0)], 1)
    roi_case(f, "many", (1, 2, 10, 10), many, (7, 7), 0.25, 2, False)


def nms_cases(f):
    for name, n, thr in [("n200_t05", 200, 0.5), ("n200_t07", 200, 0.7), ("n50_t03", 50, 0.3)]:
        boxes = rand_boxes(n, 100.0, 5.0, 40.0)
        scores = torch.rand(n)
        keep = torchvision.ops.nms(boxes, scores, thr)
        g = f.create_group("nms/" + name)
        put(g, "boxes", boxes), put(g, "scores", scores), put(g, "thresh", np.float32(thr)), put(g, "keep", keep)
    boxes = rand_boxes(300, 100.0, 5.0, 40.0)
    scores = torch.rand(300)
    groups = torch.randint(0, 4, (300,))
    keep = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    g = f.create_group("batched_nms")
    put(g, "boxes", boxes), put(g, "scores", scores), put(g, "groups", groups), put(g, "thresh", np.float32(0.5))
    put(g, "keep", keep)


def iou_coder_anchor_matcher(f):
    a, b = rand_boxes(13, 50.0, 1.0, 30.0), rand_boxes(17, 50.0, 1.0, 30.0)
    b[3] = a[2]  # an exact duplicate: IoU 1
    g = f.create_group("iou")
    put(g, "a", a), put(g, "b", b), put(g, "iou", torchvision.ops.box_iou(a, b))

    ref, gt = rand_boxes(20, 80.0, 4.0, 40.0), rand_boxes(20, 80.0, 4.0, 40.0)
    g = f.create_group("coder")
    put(g, "ref", ref), put(g, "gt", gt)
    for w, key in [((1.0, 1.0, 1.0, 1.0), "1111"), ((10.0, 10.0, 5.0, 5.0), "10_10_5_5")]:
        coder = BoxCoder(w)
        put(g, "deltas_" + key, coder.encode_single(gt, ref))
    rel = torch.randn(20, 4)
    rel[:4, 2:] = 30.0  # beyond the clamp, for both weight sets
    put(g, "rel", rel)
    for w, key in [((1.0, 1.0, 1.0, 1.0), "1111"), ((10.0, 10.0, 5.0, 5.0), "10_10_5_5")]:
        put(g, "dec_" + key, BoxCoder(w).decode_single(rel, ref))

    # anchors of the paper's config on a 100 x 90 image (strides 4, 8, 16, 32, 64: integer division)
    gen = AnchorGenerator(((32, 64, 128),) * 5, ((0.5, 1.0, 2.0),) * 5)
    grids = [(25, 23), (13, 12), (7, 6), (4, 3), (2, 2)]
    feats = [torch.zeros(1, 1, h, w) for h, w in grids]
    il = ImageList(torch.zeros(1, 3, 100, 90), [(100, 90)])
    anchors = gen(il, feats)[0]
    g = f.create_group("anchors")
    put(g, "image", np.array([100, 90], np.int32)), put(g, "grids", np.array(grids, np.int32))
    put(g, "sizes", np.array([32, 64, 128], np.float32)), put(g, "ratios", np.array([0.5, 1.0, 2.0], np.float32))
    put(g, "anchors", anchors)

    iou = torch.rand(4, 40) * 0.28   # mostly background
    iou[0, 5] = 0.95                 # a clear match
    iou[1, 7] = iou[1, 9] = 0.29     # gt 1's best IoU is low, a tie: both restored to gt 1
    iou[2, 11] = iou[3, 11] = 0.8    # the same IoU to two gts: the first wins (torch.max)
    iou[3, 20] = 0.5                 # between the thresholds
    iou[0, 21] = 0.69
    iou[2, 30] = 0.3                 # exactly the low threshold: between
    g = f.create_group("matcher")
    put(g, "iou", iou), put(g, "high", np.float32(0.7)), put(g, "low", np.float32(0.3))
    put(g, "m_low", Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou))
    put(g, "m_plain", Matcher(0.7, 0.3, allow_low_quality_matches=False)(iou))


def fpn_case(f):
    chans = [3, 5, 6, 7]
    sizes = [16, 8, 4, 2]
    fpn = FeaturePyramidNetwork(chans, 8, extra_blocks=LastLevelMaxPool())
    with torch.no_grad():
        for p in fpn.parameters():
            p.normal_(0, 0.3)
    ins = OrderedDict((str(i), torch.randn(2, c, s, s + 1)) for i, (c, s) in enumerate(zip(chans, sizes)))
    out = fpn(ins)
    g = f.create_group("fpn")
    for i, t in enumerate(ins.values()):
        put(g, "in%d" % i, t)
    for i, t in enumerate(out.values()):
        put(g, "out%d" % i, t)
    for l in range(4):
        put(g, "inner%d.w" % l, fpn.inner_blocks[l][0].weight), put(g, "inner%d.b" % l, fpn.inner_blocks[l][0].bias)
        put(g, "layer%d.w" % l, fpn.layer_blocks[l][0].weight), put(g, "layer%d.b" % l, fpn.layer_blocks[l][0].bias)


def det_case(f):
    F, REP, S = 8, 32, 64
    anchor_gen = AnchorGenerator(((32, 64, 128),) * 5, ((0.5, 1.0, 2.0),) * 5)
    head = RPNHead(F, 9)
    box_head = TwoMLPHead(F * 7 * 7, REP)
    predictor = FastRCNNPredictor(REP, 2)
    with torch.no_grad():   # larger than the default init, so scores are spread out (no ties)
        for p in list(head.parameters()) + list(box_head.parameters()) + list(predictor.parameters()):
            p.normal_(0, 0.2)
    feats = OrderedDict()
    for i, s in enumerate([16, 8, 4, 2, 1]):
        feats[["0", "1", "2", "3", "pool"][i]] = torch.randn(3, F, s, s, requires_grad=True)
    il = ImageList(torch.zeros(3, 3, S, S), [(S, S)] * 3)
    gts = [torch.tensor([[10.0, 12.0, 40.0, 44.0], [30.0, 5.0, 60.0, 30.0]]),
           torch.tensor([[5.0, 5.0, 25.0, 20.0]]),
           torch.zeros(0, 4)]
    targets = [{"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64)} for b in gts]

    def build(rpn_batch, rpn_pos, roi_batch, roi_pos):
        rpn = RegionProposalNetwork(anchor_gen, head, 0.7, 0.3, rpn_batch, rpn_pos,
                                    dict(training=2000, testing=1000), dict(training=2000, testing=1000), 0.7)
        roi = RoIHeads(MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), box_head, predictor,
                       0.5, 0.5, roi_batch, roi_pos, None, 0.05, 0.5, 100)
        return rpn, roi

    g = f.create_group("det")
    for i, t in enumerate(feats.values()):
        put(g, "f%d" % i, t)
    put(g, "gt", torch.cat(gts, 0)), put(g, "gt_n", np.array([len(b) for b in gts], np.int32))
    named = [("rpn.conv.w", head.conv[0][0].weight), ("rpn.conv.b", head.conv[0][0].bias),
             ("rpn.cls.w", head.cls_logits.weight), ("rpn.cls.b", head.cls_logits.bias),
             ("rpn.bbox.w", head.bbox_pred.weight), ("rpn.bbox.b", head.bbox_pred.bias),
             ("roi.fc6.w", box_head.fc6.weight), ("roi.fc6.b", box_head.fc6.bias),
             ("roi.fc7.w", box_head.fc7.weight), ("roi.fc7.b", box_head.fc7.bias),
             ("roi.cls.w", predictor.cls_score.weight), ("roi.cls.b", predictor.cls_score.bias),
             ("roi.bbox.w", predictor.bbox_pred.weight), ("roi.bbox.b", predictor.bbox_pred.bias)]
    for n, p in named:
        put(g, n, p)

    # training: every anchor / RoI sampled, so nothing is random
    rpn, roi = build(10 ** 6, 1.0, 10 ** 6, 1.0)
    rpn.train(), roi.train()
    props, rpn_losses = rpn(il, feats, targets)
    _, roi_losses = roi(feats, props, il.image_sizes, targets)
    losses = dict(rpn_losses, **roi_losses)
    total = sum(losses.values())
    params = [p for _, p in named] + list(feats.values())
    grads = torch.autograd.grad(total, params)
    for k in ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"]:
        put(g, k, losses[k].reshape(1))
    for (n, _), gr in zip(named, grads[: len(named)]):
        put(g, "g." + n, gr)
    for i, gr in enumerate(grads[len(named):]):
        put(g, "gf%d" % i, gr)

    # inference
    rpn, roi = build(256, 0.5, 512, 0.25)
    rpn.eval(), roi.eval()
    with torch.no_grad():
        props, _ = rpn(il, feats)
        dets, _ = roi(feats, props, il.image_sizes)
    for i, d in enumerate(dets):
        put(g, "eval%d.boxes" % i, d["boxes"]), put(g, "eval%d.scores" % i, d["scores"])
        put(g, "eval%d.labels" % i, d["labels"])
    put(g, "eval.n_props", np.array([len(p) for p in props], np.int32))


def main():
    with h5py.File(OUT, "w", track_order=True) as f:
        roi_cases(f)
        nms_cases(f)
        iou_coder_anchor_matcher(f)
        fpn_case(f)
        det_case(f)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
