"""Tiny KerasHub models with random weights, for tests and benchmarks.

`HUB_MODELS` maps a name to a zero-argument builder of a small configuration
of one of the vision backbones in `keras_hub.models` that build offline from
constructor arguments, of a task model on one, or of a tiny text model. Every
model is a functional `keras.Model`, builds in seconds on a CPU and has at
most about 1.5 million parameters. The vision models take 32x32x3 images
(VideoPrismBackbone two such frames an example, Gemma3VisionEncoder a
stack of one); `example_inputs` makes inputs for every model.

Task models (`...ImageClassifier`, `...ImageSegmenter`,
`DepthAnythingDepthEstimator`, `BertTextClassifier`) are built with
`preprocessor=None`: they take the tensors their backbone takes, with no
resizing, rescaling or tokenizing.

Left out:
  * RetinaNetObjectDetector: its feature pyramid and heads have 256 filters
    whatever the backbone, about 2.8M parameters even with one convolution
    a head (RetinaNetBackbone, the pyramid alone, is in).
  * Language models that also see images (the backbones of PaliGemma,
    Gemma3, Gemma3n, Gemma4, Qwen3.5 and BLIP-2) and the diffusion models
    (Stable Diffusion 3, Flux): not vision backbones. The vision encoders of
    Gemma3 and BLIP-2 are in, and Gemma3n's is MobileNetV5;
    Gemma4VisionEncoder takes patches, not images.

Needs Keras 3 and keras-hub; downloads nothing.

    model = build("ResNetBackbone_basic")
    model.predict(example_inputs("ResNetBackbone_basic"))
"""

import keras
import keras_hub
import numpy as np
# KerasHub's own reader of timm's block strings ("er_r1_k3_s2_e4_c16").
from keras_hub.src.models.mobilenetv5.mobilenetv5_builder import convert_arch_def_to_stackwise

models = keras_hub.models
layers = keras_hub.layers

IMAGE_SIZE = 32
IMAGE = (IMAGE_SIZE, IMAGE_SIZE, 3)
TEXT_VOCABULARY = 100
TEXT_LENGTH = 16

HUB_MODELS = {}
FAMILY = {}
# name -> the input a model takes: (shape, kind), or a dict of them by input
# name; kind is "uniform" (floats in [0, 1)), "tokens" (ids below
# TEXT_VOCABULARY), "ones" or "zeros".
_INPUTS = {}

_IMAGES = {"images": (IMAGE, "uniform")}
_TOKENS = {"token_ids": ((TEXT_LENGTH,), "tokens"), "padding_mask": ((TEXT_LENGTH,), "ones")}


def _register(name, family, inputs=(IMAGE, "uniform")):
    """Records the decorated builder under `name`, in `family`, taking
    `inputs` (see `_INPUTS`)."""

    def decorator(builder):
        HUB_MODELS[name] = builder
        FAMILY[name] = family
        _INPUTS[name] = inputs
        return builder

    return decorator


# --- ResNet and the models built on it -------------------------------------


def _resnet(block_type, use_pre_activation=False):
    # ResNetBackbone wants 64 filters in the first stack, and a basic block's
    # first stack adds its input to its output: a 64-channel stem for those.
    vd = block_type.endswith("_vd")
    stem_filters = [16, 16, 32] if vd else [64 if block_type == "basic_block" else 32]
    return models.ResNetBackbone(
        input_conv_filters=stem_filters,
        input_conv_kernel_sizes=[3] * len(stem_filters) if vd else [7],
        stackwise_num_filters=[64, 64, 64] if "basic" in block_type else [64, 32, 32],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type=block_type,
        use_pre_activation=use_pre_activation,
    )


@_register("ResNetBackbone_basic", "resnet")
def resnet_basic():
    """ResNet18-style basic blocks."""
    return _resnet("basic_block")


@_register("ResNetBackbone_bottleneck", "resnet")
def resnet_bottleneck():
    """ResNet50-style bottleneck blocks."""
    return _resnet("bottleneck_block")


@_register("ResNetBackbone_bottleneck_preact", "resnet")
def resnet_bottleneck_preact():
    """ResNetV2: pre-activation bottleneck blocks."""
    return _resnet("bottleneck_block", use_pre_activation=True)


@_register("ResNetBackbone_basic_vd", "resnet")
def resnet_basic_vd():
    """ResNet-vd: a three-convolution stem, average-pooled shortcuts."""
    return _resnet("basic_block_vd")


@_register("ResNetBackbone_bottleneck_vd", "resnet")
def resnet_bottleneck_vd():
    """ResNet-vd with bottleneck blocks."""
    return _resnet("bottleneck_block_vd")


@_register("ResNetImageClassifier", "resnet")
def resnet_image_classifier():
    """ResNetImageClassifier on basic blocks, 10 classes."""
    return models.ResNetImageClassifier(
        backbone=_resnet("basic_block"), num_classes=10, preprocessor=None
    )


def _deeplab_v3():
    return models.DeepLabV3Backbone(
        image_encoder=_resnet("basic_block"),
        spatial_pyramid_pooling_key="P4",
        upsampling_size=4,
        dilation_rates=[2, 4],
        low_level_feature_key="P2",
        projection_filters=16,
        image_shape=IMAGE,
    )


@_register("DeepLabV3Backbone", "deeplab_v3")
def deeplab_v3():
    """DeepLabV3+: atrous spatial pyramid pooling on a ResNet, a decoder
    joining a low-level feature map."""
    return _deeplab_v3()


@_register("DeepLabV3ImageSegmenter", "deeplab_v3")
def deeplab_v3_image_segmenter():
    """DeepLabV3ImageSegmenter, 4 classes."""
    return models.DeepLabV3ImageSegmenter(backbone=_deeplab_v3(), num_classes=4, preprocessor=None)


def _basnet():
    # BASNet feeds its own `projection_filters`-channel convolution to the
    # encoder's first stack (of four), which must take the stem's width; its
    # decoder has 8 * projection_filters channels. Vd blocks project their
    # shortcut, so that the stem can be narrower than the 64-filter stack.
    encoder = models.ResNetBackbone(
        input_conv_filters=[8],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32, 32, 32],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block_vd",
    )
    return models.BASNetBackbone(
        image_encoder=encoder, num_classes=1, image_shape=IMAGE, projection_filters=8
    )


@_register("BASNetBackbone", "basnet")
def basnet():
    """BASNet: a ResNet encoder-decoder with a residual refinement module;
    a dict of eight sigmoid maps."""
    return _basnet()


@_register("BASNetImageSegmenter", "basnet")
def basnet_image_segmenter():
    """BASNetImageSegmenter: the refined map only."""
    return models.BASNetImageSegmenter(backbone=_basnet(), preprocessor=None)


@_register("RetinaNetBackbone", "retinanet")
def retinanet():
    """RetinaNet's feature pyramid (256 filters, fixed) on a ResNet."""
    return models.RetinaNetBackbone(
        image_encoder=_resnet("basic_block"),
        min_level=3,
        max_level=4,
        use_p5=False,
        image_shape=IMAGE,
    )


# --- Other convolutional networks ------------------------------------------


def _cspnet(stage_type, block_type, **kwargs):
    return models.CSPNetBackbone(
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=1,
        stackwise_depth=[1, 2, 1],
        stackwise_strides=[2, 2, 2],
        stackwise_num_filters=[32, 64, 128],
        stage_type=stage_type,
        block_type=block_type,
        image_shape=IMAGE,
        **kwargs,
    )


def _cspdarknet():
    return _cspnet(
        "csp",
        "dark_block",
        bottle_ratio=(0.5, 1.0),
        block_ratio=(1.0, 0.5),
        expand_ratio=(2.0, 1.0),
        stem_padding="same",
        down_growth=True,
    )


@_register("CSPNetBackbone", "cspnet")
def cspnet():
    """CSPDarkNet: cross-stage-partial stages of dark blocks."""
    return _cspdarknet()


@_register("CSPNetBackbone_cs3_bottleneck", "cspnet")
def cspnet_cs3_bottleneck():
    """CS3 stages of bottleneck blocks with grouped convolutions."""
    return _cspnet(
        "cs3",
        "bottleneck_block",
        groups=2,
        bottle_ratio=[0.5],
        block_ratio=[1.0],
        expand_ratio=[2.0],
        cross_linear=True,
    )


@_register("CSPNetBackbone_dark", "cspnet")
def cspnet_dark():
    """DarkNet: plain stages of dark blocks."""
    return _cspnet("dark", "dark_block", bottle_ratio=[0.5], stem_padding="same")


@_register("CSPNetImageClassifier", "cspnet")
def cspnet_image_classifier():
    """CSPNetImageClassifier on CSPDarkNet, 10 classes."""
    return models.CSPNetImageClassifier(backbone=_cspdarknet(), num_classes=10, preprocessor=None)


@_register("XceptionBackbone", "xception")
def xception():
    """Xception: separable convolutions with convolution shortcuts."""
    return models.XceptionBackbone(
        stackwise_conv_filters=[[16, 32], [32, 64], [64, 64], [96, 128]],
        stackwise_pooling=[True, True, False, False],
        image_shape=IMAGE,
    )


def _efficientnet(width=1.0, **kwargs):
    stacks = len(kwargs["stackwise_kernel_sizes"])
    return models.EfficientNetBackbone(
        stackwise_width_coefficients=[width] * stacks,
        stackwise_depth_coefficients=[1.0] * stacks,
        stackwise_force_input_filters=[0] * stacks,
        input_shape=IMAGE,
        **kwargs,
    )


def _efficientnet_v2():
    return _efficientnet(
        stackwise_kernel_sizes=[3, 3, 3, 3],
        stackwise_num_repeats=[1, 2, 2, 2],
        stackwise_input_filters=[16, 16, 24, 32],
        stackwise_output_filters=[16, 24, 32, 48],
        stackwise_expansion_ratios=[1, 4, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0, 0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 2],
        stackwise_block_types=["fused", "fused", "unfused", "unfused"],
        num_features=128,
    )


@_register("EfficientNetBackbone", "efficientnet")
def efficientnet():
    """EfficientNetV2: fused-MBConv stages, then MBConv stages with
    squeeze-excitation."""
    return _efficientnet_v2()


@_register("EfficientNetBackbone_v1", "efficientnet")
def efficientnet_v1():
    """EfficientNet (V1): B0's MBConv blocks with squeeze-excitation, half
    width, rounded as V1 rounds."""
    return _efficientnet(
        width=0.5,
        stackwise_kernel_sizes=[3, 3, 5, 3],
        stackwise_num_repeats=[1, 2, 2, 1],
        stackwise_input_filters=[32, 16, 24, 40],
        stackwise_output_filters=[16, 24, 40, 80],
        stackwise_expansion_ratios=[1, 6, 6, 6],
        stackwise_squeeze_and_excite_ratios=[0.25] * 4,
        stackwise_strides=[1, 2, 2, 2],
        stackwise_block_types=["v1"] * 4,
        min_depth=None,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        dropout=0,
        num_features=256,
    )


@_register("EfficientNetBackbone_edge", "efficientnet")
def efficientnet_edge():
    """EfficientNet-EdgeTPU-like: a conv-BN-activation stage without
    residual, fused-MBConv and MBConv stages, ReLU, no squeeze-excitation."""
    return _efficientnet(
        stackwise_kernel_sizes=[3, 3, 3, 5],
        stackwise_num_repeats=[1, 2, 2, 2],
        stackwise_input_filters=[16, 16, 24, 32],
        stackwise_output_filters=[16, 24, 32, 48],
        stackwise_expansion_ratios=[1, 4, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0] * 4,
        stackwise_strides=[1, 2, 2, 2],
        stackwise_block_types=["cba", "fused", "fused", "unfused"],
        stackwise_nores_option=[True, False, False, False],
        activation="relu",
        num_features=128,
    )


@_register("EfficientNetImageClassifier", "efficientnet")
def efficientnet_image_classifier():
    """EfficientNetImageClassifier on the V2 backbone, 10 classes."""
    return models.EfficientNetImageClassifier(
        backbone=_efficientnet_v2(), num_classes=10, preprocessor=None
    )


def _mobilenet_v3():
    return models.MobileNetBackbone(
        stackwise_expansion=[[32, 48], [64, 96]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]],
        stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=96,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=96,
        squeeze_and_excite=0.5,
        image_shape=IMAGE,
        input_num_filters=16,
    )


@_register("MobileNetBackbone", "mobilenet")
def mobilenet():
    """MobileNetV3 (small-style): inverted residual blocks with
    squeeze-excitation and hard-swish."""
    return _mobilenet_v3()


@_register("MobileNetImageClassifier", "mobilenet")
def mobilenet_image_classifier():
    """MobileNetImageClassifier (1x1-convolution head of 128 features), 10
    classes."""
    return models.MobileNetImageClassifier(
        backbone=_mobilenet_v3(), num_classes=10, num_features=128, preprocessor=None
    )


def _mobilenet_v5():
    arch = [
        ["er_r1_k3_s2_e4_c16"],
        ["uir_r1_a3_k5_s2_e4_c32", "uir_r1_a3_k0_s1_e4_c32"],
        ["uir_r1_a5_k5_s2_e4_c48", "mqa_r1_k3_h2_v2_s1_d16_c48", "uir_r1_a0_k0_s1_e2_c48"],
    ]
    return models.MobileNetV5Backbone(
        **convert_arch_def_to_stackwise(arch),
        stem_size=16,
        num_features=64,
        msfa_output_resolution=2,
        image_shape=IMAGE,
    )


@_register("MobileNetV5Backbone", "mobilenetv5")
def mobilenet_v5():
    """MobileNetV5 (Gemma 3n's): edge-residual, universal inverted residual
    and multi-query attention blocks, RMS norms, a multi-scale fusion
    adapter."""
    return _mobilenet_v5()


@_register("MobileNetV5ImageClassifier", "mobilenetv5")
def mobilenet_v5_image_classifier():
    """MobileNetV5ImageClassifier (a 1x1-convolution head of 64), 10
    classes."""
    return models.MobileNetV5ImageClassifier(
        backbone=_mobilenet_v5(), num_classes=10, head_hidden_size=64, preprocessor=None
    )


@_register("DenseNetBackbone", "densenet")
def densenet():
    """DenseNet: dense blocks (concatenated growth) and transition layers."""
    return models.DenseNetBackbone(
        stackwise_num_repeats=[2, 2, 2, 2], growth_rate=8, image_shape=IMAGE
    )


@_register("VGGBackbone", "vgg")
def vgg():
    """VGG: stacks of 3x3 convolutions and max pooling."""
    return models.VGGBackbone(
        stackwise_num_repeats=[1, 2, 2], stackwise_num_filters=[16, 32, 64], image_shape=IMAGE
    )


@_register("VGGImageClassifier", "vgg")
def vgg_image_classifier():
    """VGGImageClassifier: VGG's fully connected layers as a 7x7 and a 1x1
    convolution on an 8x8 map, 10 classes."""
    backbone = models.VGGBackbone(
        stackwise_num_repeats=[1, 2], stackwise_num_filters=[16, 32], image_shape=IMAGE
    )
    return models.VGGImageClassifier(
        backbone=backbone, num_classes=10, pooling_hidden_dim=64, preprocessor=None
    )


def _hgnetv2(image_shape=IMAGE, out_features=None):
    return models.HGNetV2Backbone(
        depths=[1, 1, 1],
        embedding_size=16,
        hidden_sizes=[32, 64, 128],
        stem_channels=[3, 16, 16],
        hidden_act="relu",
        use_learnable_affine_block=True,
        stackwise_stage_filters=[
            [16, 16, 32, 1, 2, 3],
            [32, 24, 64, 1, 2, 3],
            [64, 32, 128, 1, 2, 5],
        ],
        apply_downsample=[False, True, True],
        use_lightweight_conv_block=[False, False, True],
        image_shape=image_shape,
        out_features=out_features,
    )


@_register("HGNetV2Backbone", "hgnetv2")
def hgnetv2():
    """HGNetV2: HG blocks of stacked and aggregated convolutions, light
    (depthwise) blocks in the last stage, learnable affine blocks; a dict of
    the stem and stage outputs."""
    return _hgnetv2()


@_register("HGNetV2ImageClassifier", "hgnetv2")
def hgnetv2_image_classifier():
    """HGNetV2ImageClassifier, 10 classes."""
    return models.HGNetV2ImageClassifier(backbone=_hgnetv2(), num_classes=10, preprocessor=None)


@_register("DFineBackbone", "d_fine")
def d_fine():
    """D-FINE: a hybrid encoder and a deformable-attention DETR decoder on
    HGNetV2's last two stages, 10 queries; a dict of decoder outputs."""
    stages = ["stage2", "stage3"]
    return models.DFineBackbone(
        backbone=_hgnetv2(image_shape=(None, None, 3), out_features=stages),
        decoder_in_channels=[32, 32],
        encoder_hidden_dim=32,
        num_denoising=0,
        num_labels=3,
        hidden_dim=32,
        learn_initial_query=False,
        num_queries=10,
        anchor_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        feat_strides=[8, 16],
        num_feature_levels=2,
        encoder_in_channels=[64, 128],
        encode_proj_layers=[1],
        num_attention_heads=2,
        encoder_ffn_dim=64,
        num_encoder_layers=1,
        hidden_expansion=0.34,
        depth_multiplier=0.5,
        eval_idx=-1,
        num_decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        decoder_n_points=[2, 2],
        lqe_hidden_dim=16,
        num_lqe_layers=1,
        out_features=stages,
        image_shape=IMAGE,
        seed=0,
    )


# --- Vision transformers ----------------------------------------------------


def _vit(use_class_token=True):
    return models.ViTBackbone(
        image_shape=IMAGE,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        use_class_token=use_class_token,
    )


@_register("ViTBackbone", "vit")
def vit():
    """ViT: patch embedding, class token, transformer encoder."""
    return _vit()


@_register("ViTImageClassifier", "vit")
def vit_image_classifier():
    """ViTImageClassifier (class-token pooling), 10 classes."""
    return models.ViTImageClassifier(backbone=_vit(), num_classes=10, preprocessor=None)


def _deit():
    return models.DeiTBackbone(
        image_shape=IMAGE,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
    )


@_register("DeiTBackbone", "deit")
def deit():
    """DeiT: ViT with class and distillation tokens."""
    return _deit()


@_register("DeiTImageClassifier", "deit")
def deit_image_classifier():
    """DeiTImageClassifier (class- and distillation-token heads), 10
    classes."""
    return models.DeiTImageClassifier(backbone=_deit(), num_classes=10, preprocessor=None)


def _mit():
    return models.MiTBackbone(
        layerwise_depths=[1, 1],
        num_layers=2,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.1,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
        image_shape=IMAGE,
        hidden_dims=[16, 32],
    )


@_register("MiTBackbone", "mit")
def mit():
    """Mix Transformer: overlapping patch embeddings, spatial-reduction
    attention."""
    return _mit()


def _segformer():
    return models.SegFormerBackbone(image_encoder=_mit(), projection_filters=32)


@_register("SegFormerBackbone", "segformer")
def segformer():
    """SegFormer: an all-MLP decoder on the Mix Transformer."""
    return _segformer()


@_register("SegFormerImageSegmenter", "segformer")
def segformer_image_segmenter():
    """SegFormerImageSegmenter, 4 classes."""
    return models.SegFormerImageSegmenter(backbone=_segformer(), num_classes=4, preprocessor=None)


def _swin():
    return models.SwinTransformerBackbone(
        image_shape=IMAGE,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
        window_size=4,
        patch_size=4,
    )


@_register("SwinTransformerBackbone", "swin")
def swin_transformer():
    """Swin Transformer: shifted-window attention, patch merging."""
    return _swin()


@_register("SwinTransformerImageClassifier", "swin")
def swin_transformer_image_classifier():
    """SwinTransformerImageClassifier, 10 classes."""
    return models.SwinTransformerImageClassifier(
        backbone=_swin(), num_classes=10, preprocessor=None
    )


def _dinov2(num_layers=2, patch_size=8, **kwargs):
    return models.DINOV2Backbone(
        patch_size=patch_size,
        num_layers=num_layers,
        hidden_dim=32,
        num_heads=2,
        intermediate_dim=64,
        image_shape=IMAGE,
        position_embedding_shape=IMAGE,
        **kwargs,
    )


@_register("DINOV2Backbone", "dinov2", _IMAGES)
def dinov2():
    """DINOv2: ViT with layer scale."""
    return _dinov2()


@_register("DINOV2Backbone_registers_swiglu", "dinov2", _IMAGES)
def dinov2_registers_swiglu():
    """DINOv2 with register tokens and SwiGLU feed-forward layers."""
    return _dinov2(num_register_tokens=4, use_swiglu_ffn=True)


def _depth_anything():
    # 4x4 patches: the neck's 3x3 convolutions, unpadded while it builds,
    # need its half-resolution level to be 3x3 or more.
    return models.DepthAnythingBackbone(
        image_encoder=_dinov2(num_layers=4, patch_size=4),
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_dims=[8, 16, 32, 32],
        fusion_hidden_dim=32,
        head_hidden_dim=8,
        head_in_index=-1,
        feature_keys=["stage1", "stage2", "stage3", "stage4"],
    )


@_register("DepthAnythingBackbone", "depth_anything", _IMAGES)
def depth_anything():
    """Depth Anything: a DPT head on four DINOv2 layers."""
    return _depth_anything()


@_register("DepthAnythingDepthEstimator", "depth_anything", _IMAGES)
def depth_anything_depth_estimator():
    """DepthAnythingDepthEstimator, relative depth."""
    return models.DepthAnythingDepthEstimator(
        backbone=_depth_anything(), depth_estimation_type="relative", preprocessor=None
    )


@_register("DINOV3Backbone", "dinov3", {"pixel_values": (IMAGE, "uniform")})
def dinov3():
    """DINOv3: ViT with rotary position embeddings and register tokens."""
    return models.DINOV3Backbone(
        patch_size=8,
        num_layers=2,
        hidden_dim=32,
        num_heads=2,
        intermediate_dim=64,
        image_shape=IMAGE,
    )


def _vit_det():
    return models.ViTDetBackbone(
        hidden_size=32,
        num_layers=2,
        intermediate_dim=64,
        num_heads=2,
        global_attention_layer_indices=[1],
        image_shape=IMAGE,
        patch_size=4,
        num_output_channels=16,
        window_size=4,
    )


@_register("ViTDetBackbone", "vit_det", _IMAGES)
def vit_det():
    """ViTDet (SAM's image encoder): windowed and global attention with
    relative positions, a convolutional neck."""
    return _vit_det()


def _sam():
    return models.SAMBackbone(
        image_encoder=_vit_det(),
        prompt_encoder=layers.SAMPromptEncoder(
            hidden_size=16,
            image_embedding_size=(8, 8),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_channels=8,
        ),
        mask_decoder=layers.SAMMaskDecoder(
            num_layers=2,
            hidden_size=16,
            intermediate_dim=32,
            num_heads=2,
            embedding_dim=16,
            num_multimask_outputs=3,
            iou_head_depth=2,
            iou_head_hidden_dim=16,
        ),
    )


_SAM_INPUTS = {
    **_IMAGES,
    "points": ((1, 2), "uniform"),
    "labels": ((1,), "ones"),
    "boxes": ((1, 2, 2), "uniform"),
    "masks": ((0, IMAGE_SIZE, IMAGE_SIZE, 1), "zeros"),
}


@_register("SAMBackbone", "sam", _SAM_INPUTS)
def sam():
    """Segment Anything: a ViTDet encoder, a prompt encoder (points, boxes,
    no masks), a two-way-transformer mask decoder."""
    return _sam()


@_register("SAMImageSegmenter", "sam", _SAM_INPUTS)
def sam_image_segmenter():
    """SAMImageSegmenter: masks and IoU predictions."""
    return models.SAMImageSegmenter(backbone=_sam(), preprocessor=None)


@_register(
    "SAM3PromptableConceptBackbone",
    "sam3",
    {
        "pixel_values": (IMAGE, "uniform"),
        **_TOKENS,
        "boxes": ((1, 5), "zeros"),
        "box_labels": ((1,), "zeros"),
    },
)
def sam3():
    """SAM 3: vision and text encoders, geometry encoder, DETR encoder and
    decoder (10 queries), mask decoder."""
    return models.SAM3PromptableConceptBackbone(
        vision_encoder=layers.SAM3VisionEncoder(
            image_shape=IMAGE,
            patch_size=8,
            num_layers=2,
            hidden_dim=32,
            intermediate_dim=64,
            num_heads=2,
            fpn_hidden_dim=32,
            fpn_scale_factors=[4.0, 2.0, 1.0, 0.5],
            pretrain_image_shape=IMAGE,
            window_size=2,
            global_attn_indexes=[1],
        ),
        text_encoder=layers.SAM3TextEncoder(
            vocabulary_size=TEXT_VOCABULARY,
            embedding_dim=32,
            hidden_dim=32,
            num_layers=2,
            num_heads=2,
            intermediate_dim=64,
        ),
        geometry_encoder=layers.SAM3GeometryEncoder(
            num_layers=1, hidden_dim=32, intermediate_dim=64, num_heads=2, roi_size=2
        ),
        detr_encoder=layers.SAM3DetrEncoder(
            num_layers=1, hidden_dim=32, intermediate_dim=64, num_heads=2
        ),
        detr_decoder=layers.SAM3DetrDecoder(
            image_shape=IMAGE,
            patch_size=8,
            num_layers=1,
            hidden_dim=32,
            intermediate_dim=64,
            num_heads=2,
            num_queries=10,
        ),
        mask_decoder=layers.SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=32, num_heads=2),
    )


# --- Vision encoders of vision-language models ------------------------------

_ENCODER = dict(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64)
_TEXT_ENCODER = dict(
    vocabulary_size=TEXT_VOCABULARY,
    embedding_dim=32,
    hidden_dim=32,
    num_layers=2,
    num_heads=2,
    intermediate_dim=64,
    max_sequence_length=TEXT_LENGTH,
)
_IMAGES_AND_TOKENS = {**_IMAGES, "token_ids": _TOKENS["token_ids"]}


@_register("CLIPVisionEncoder", "clip", _IMAGES)
def clip_vision_encoder():
    """CLIP's vision transformer."""
    return models.CLIPVisionEncoder(**_ENCODER, image_shape=IMAGE)


@_register("CLIPBackbone", "clip", _IMAGES_AND_TOKENS)
def clip():
    """CLIP: vision and text transformers, projected; image-text logits."""
    return models.CLIPBackbone(
        vision_encoder=models.CLIPVisionEncoder(**_ENCODER, image_shape=IMAGE),
        text_encoder=models.CLIPTextEncoder(**_TEXT_ENCODER),
        projection_dim=16,
    )


@_register("SigLIPVisionEncoder", "siglip", _IMAGES)
def siglip_vision_encoder():
    """SigLIP's vision transformer with attention pooling."""
    return models.SigLIPVisionEncoder(**_ENCODER, image_shape=IMAGE)


@_register("SigLIPBackbone", "siglip", _IMAGES_AND_TOKENS)
def siglip():
    """SigLIP: vision and text transformers; image-text logits."""
    return models.SigLIPBackbone(
        vision_encoder=models.SigLIPVisionEncoder(**_ENCODER, image_shape=IMAGE),
        text_encoder=models.SigLIPTextEncoder(**_TEXT_ENCODER),
    )


@_register("MetaCLIP2VisionEncoder", "metaclip_2", _IMAGES)
def metaclip2_vision_encoder():
    """MetaCLIP 2's vision transformer."""
    return models.MetaCLIP2VisionEncoder(**_ENCODER, image_shape=IMAGE)


@_register("MetaCLIP2Backbone", "metaclip_2", _IMAGES_AND_TOKENS)
def metaclip2():
    """MetaCLIP 2: vision and text transformers, projected; image-text
    logits."""
    return models.MetaCLIP2Backbone(
        vision_encoder=models.MetaCLIP2VisionEncoder(**_ENCODER, image_shape=IMAGE),
        text_encoder=models.MetaCLIP2TextEncoder(**_TEXT_ENCODER),
        projection_dim=16,
    )


@_register("BLIP2VisionEncoder", "blip2")
def blip2_vision_encoder():
    """BLIP-2's EVA-CLIP vision transformer."""
    return models.BLIP2VisionEncoder(
        image_size=IMAGE_SIZE,
        **_ENCODER,
        use_patch_bias=True,
        use_class_token=True,
        use_mha_bias=True,
        use_mlp_bias=True,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        initializer_range=0.02,
    )


@_register("Gemma3VisionEncoder", "gemma3", ((1,) + IMAGE, "uniform"))
def gemma3_vision_encoder():
    """Gemma 3's SigLIP vision encoder, average-pooled to 2x2 tokens and
    projected; takes one image per example, (1, 32, 32, 3)."""
    return models.Gemma3VisionEncoder(
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_heads=2,
        hidden_dim=32,
        num_layers=2,
        intermediate_dim=64,
        output_dim=16,
        pool_size=2,
    )


@_register("PARSeqBackbone", "parseq", {**_IMAGES, **_TOKENS})
def parseq():
    """PARSeq (scene-text recognition): a ViT without class token and a
    transformer decoder over 16 label tokens."""
    return models.PARSeqBackbone(
        image_encoder=_vit(use_class_token=False),
        vocabulary_size=TEXT_VOCABULARY,
        max_label_length=TEXT_LENGTH - 1,
        decoder_hidden_dim=32,
        num_decoder_layers=1,
        num_decoder_heads=2,
        decoder_mlp_dim=64,
    )


@_register("VideoPrismBackbone", "video_prism", ((2,) + IMAGE, "uniform"))
def video_prism():
    """VideoPrism (video only): factorized spatial and temporal
    transformers over two 32x32 frames, (2, 32, 32, 3)."""
    return models.VideoPrismBackbone(
        num_frames=2,
        patch_size=8,
        hidden_dim=32,
        intermediate_dim=64,
        num_heads=2,
        num_spatial_layers=1,
        num_temporal_layers=1,
        num_auxiliary_layers=0,
        image_shape=IMAGE,
    )


# --- Text -----------------------------------------------------------------

_BERT_INPUTS = {**_TOKENS, "segment_ids": ((TEXT_LENGTH,), "zeros")}
# The size of every small text transformer (two layers of two heads).
_TEXT_TRANSFORMER = dict(vocabulary_size=TEXT_VOCABULARY, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
                         max_sequence_length=TEXT_LENGTH)


def _text_transformer_without(key):
    """`_TEXT_TRANSFORMER` without the argument `key`, for a constructor
    that names it otherwise or does not take it."""
    return {name: value for name, value in _TEXT_TRANSFORMER.items() if name != key}


def _bert():
    return models.BertBackbone(**_TEXT_TRANSFORMER)


@_register("BertBackbone", "text", _BERT_INPUTS)
def bert():
    """BERT: token, segment and position embeddings, a transformer encoder,
    a pooler; a dict of sequence and pooled outputs."""
    return _bert()


@_register("BertTextClassifier", "text", _BERT_INPUTS)
def bert_text_classifier():
    """BertTextClassifier on the pooled output, 3 classes."""
    return models.BertTextClassifier(backbone=_bert(), num_classes=3, preprocessor=None)


@_register("DistilBertBackbone", "text", _TOKENS)
def distil_bert():
    """DistilBERT: BERT without segment embeddings or pooler."""
    return models.DistilBertBackbone(**_TEXT_TRANSFORMER)


@_register("AlbertBackbone", "text", _BERT_INPUTS)
def albert():
    """ALBERT: factorised embeddings, one encoder layer shared across
    depth (called twice)."""
    return models.AlbertBackbone(**_TEXT_TRANSFORMER, embedding_dim=16)


@_register("RobertaBackbone", "text", _TOKENS)
def roberta():
    """RoBERTa: BERT's encoder without segment embeddings."""
    return models.RobertaBackbone(**_TEXT_TRANSFORMER)


@_register("XLMRobertaBackbone", "text", _TOKENS)
def xlm_roberta():
    """XLM-RoBERTa: RoBERTa's layers."""
    return models.XLMRobertaBackbone(**_TEXT_TRANSFORMER)


@_register("ElectraBackbone", "text", _BERT_INPUTS)
def electra():
    """ELECTRA: embeddings of 16 projected to the encoder's 32."""
    return models.ElectraBackbone(vocab_size=TEXT_VOCABULARY, embedding_dim=16,
                                  **_text_transformer_without("vocabulary_size"))


@_register("DebertaV3Backbone", "text", _TOKENS)
def deberta_v3():
    """DeBERTaV3: disentangled attention with relative positions."""
    return models.DebertaV3Backbone(**_TEXT_TRANSFORMER)


@_register("RoformerV2Backbone", "text", _BERT_INPUTS)
def roformer_v2():
    """RoFormerV2: rotary embeddings, no biases, no LayerNormalization
    scales."""
    return models.RoformerV2Backbone(head_size=16, **_text_transformer_without("max_sequence_length"))


@_register("ESM2Backbone", "text", {"token_ids": ((TEXT_LENGTH,), "tokens")})
def esm2():
    """ESM-2, the protein language model: rotary embeddings."""
    return models.ESM2Backbone(**_text_transformer_without("max_sequence_length"))


@_register("FNetBackbone", "text", {"token_ids": ((TEXT_LENGTH,), "tokens"),
                                    "segment_ids": ((TEXT_LENGTH,), "zeros")})
def fnet():
    """FNet: a Fourier transform over the sequence in place of attention,
    which needs the sequence length."""
    return models.FNetBackbone(**_text_transformer_without("num_heads"))


@_register("GPTNeoXBackbone", "text", _TOKENS)
def gpt_neo_x():
    """GPT-NeoX: a decoder with rotary embeddings."""
    return models.GPTNeoXBackbone(**_TEXT_TRANSFORMER)


@_register("GemmaBackbone", "text", _TOKENS)
def gemma():
    """Gemma: a decoder with multi-query attention and a gated MLP."""
    return models.GemmaBackbone(vocabulary_size=TEXT_VOCABULARY, num_layers=2, num_query_heads=2,
                                num_key_value_heads=1, hidden_dim=32, intermediate_dim=64, head_dim=16)


@_register("GPT2Backbone", "text", _TOKENS)
def gpt2():
    """GPT-2: a decoder whose causal mask reads the sequence length."""
    return models.GPT2Backbone(**_TEXT_TRANSFORMER)


@_register("LlamaBackbone", "text", _TOKENS)
def llama():
    """Llama: rotary embeddings, grouped-query attention, a gated MLP."""
    return models.LlamaBackbone(
        vocabulary_size=TEXT_VOCABULARY,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=32,
        intermediate_dim=64,
    )


@_register("TransformerEncoderModel", "text", ((TEXT_LENGTH, 32), "uniform"))
def transformer_encoder_model():
    """Two `keras_hub.layers.TransformerEncoder`s on a (16, 32) sequence,
    average pooling, a 10-way dense layer."""
    inputs = keras.Input((TEXT_LENGTH, 32))
    x = layers.TransformerEncoder(intermediate_dim=64, num_heads=4)(inputs)
    x = layers.TransformerEncoder(intermediate_dim=64, num_heads=4)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="transformer_encoder_model")


# The first model of each family: its plainest backbone.
ONE_OF_EACH_FAMILY = {
    next(name for name in HUB_MODELS if FAMILY[name] == family) for family in set(FAMILY.values())
}


def build(name):
    """`HUB_MODELS[name]()`, after seeding Python, NumPy and the backend
    with 0."""
    keras.utils.set_random_seed(0)
    return HUB_MODELS[name]()


def example_inputs(name, batch=2, seed=0):
    """Random inputs for the model `name`: a numpy array, or a dict of them
    by input name."""
    rng = np.random.RandomState(seed)

    def make(shape, kind):
        shape = (batch,) + shape
        if kind == "uniform":
            return rng.rand(*shape).astype("float32")
        if kind == "tokens":
            return rng.randint(0, TEXT_VOCABULARY, shape).astype("int32")
        return np.full(shape, int(kind == "ones"), dtype="int32")

    spec = _INPUTS[name]
    if isinstance(spec, dict):
        return {key: make(*value) for key, value in spec.items()}
    return make(*spec)
