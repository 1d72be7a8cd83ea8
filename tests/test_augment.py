import numpy as np

from tarrl_tf.ssl.augment import ViewAugmentation


def test_views_are_valid_random_and_reproducible(images):
    views = ViewAugmentation.for_input_shape(images.shape[1:], seed=3)
    v1, v2 = views(images).numpy(), views(images).numpy()
    assert v1.shape == images.shape and v1.dtype == np.float32
    assert v1.min() >= 0 and v1.max() <= 1
    assert not np.allclose(v1, v2)
    again = ViewAugmentation.for_input_shape(images.shape[1:], seed=3)
    np.testing.assert_array_equal(again(images).numpy(), v1)


def test_no_augmentation_outside_training(images):
    views = ViewAugmentation(seed=0)
    np.testing.assert_array_equal(views(images, training=False).numpy(), images)


def test_rgb_views_drop_color_and_flip():
    rng = np.random.default_rng(0)
    images = rng.random((32, 8, 8, 3), dtype=np.float32)
    gray = ViewAugmentation(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), brightness=0, contrast=0,
                            grayscale_probability=1.0, seed=0)(images).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-6)
    flipped = ViewAugmentation(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), brightness=0, contrast=0,
                               flip=True, seed=0)(images).numpy()
    mirrored = [np.allclose(f, img[:, ::-1], atol=1e-5) for f, img in zip(flipped, images)]
    assert 0 < sum(mirrored) < len(images)


def test_config_round_trip():
    views = ViewAugmentation(crop_scale=(0.4, 0.9), flip=True, noise_stddev=0.1, seed=7)
    assert ViewAugmentation.from_config(views.get_config()).get_config() == views.get_config()
