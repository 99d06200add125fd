"""Hydra schemas of the stage options (generated: do not edit).

Plain mirrors of the frozen options dataclasses of the stage modules (fields, types,
defaults, docstrings), so that the command line parses its options and prints ``--help``
without importing JAX. Rewrite with ``python -m nanoshape.config`` after changing an
options class; tests/test_config.py fails while this file differs from them.
"""

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ImagingSchema:
    """Static options and parameter ranges of the TEM imaging model (bright field by default).

    Each range is sampled uniformly per image by :func:`sample_imaging` (doses and blur
    log-uniformly). Intensities are relative to the unobstructed beam (background = 1 in bright field).

    Attributes:
      dark_field: render bright particles on a dark background (HAADF / dark field).
      contrast_range: fraction of the beam a particle removes at full thickness (mass-thickness).
      dome_range: 0 = flat plate of uniform thickness, 1 = thickness rising like a sphere's from the edge.
      texture_range: rms of the amorphous-carbon film's relative thickness variation.
      texture_cell_px: correlation length of the film texture in pixels.
      gradient_range: largest relative illumination change across the image (each axis).
      blur_sigma_px_range: standard deviation of the Gaussian point-spread function, pixels.
      dose_range: electrons per pixel of the unobstructed beam (sets the shot noise).
      dark_field_background_range: dark-field background as a fraction of the particle signal.
      exact_poisson: draw shot noise from the Poisson distribution (slow on CPU) instead of
        its normal approximation (accurate at the doses used here).
      quantize_levels: number of grey levels after normalisation (256 mimics 8-bit figures); 0 = off.
    """

    dark_field: bool = False
    contrast_range: tuple[float, float] = (0.2, 0.85)
    dome_range: tuple[float, float] = (0.0, 1.0)
    texture_range: tuple[float, float] = (0.0, 0.06)
    texture_cell_px: int = 4
    gradient_range: tuple[float, float] = (0.0, 0.1)
    blur_sigma_px_range: tuple[float, float] = (0.3, 1.5)
    dose_range: tuple[float, float] = (30.0, 3000.0)
    dark_field_background_range: tuple[float, float] = (0.02, 0.3)
    exact_poisson: bool = False
    quantize_levels: int = 0


@dataclass
class ShapePriorSchema:
    """The distribution of training shapes: p and L log-uniform, d uniform, phi uniform.

    Attributes:
      p_range: bounds of the log-uniform curvature exponent.
      d_values: the numbers of major axes drawn with equal probability.
      l_ratio_range: bounds of the log-uniform axis ratio (canonical: lower bound >= 1).
      phi_range: bounds of the uniform phase, radians.
    """

    p_range: tuple[float, float] = (0.25, 64.0)
    d_values: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    l_ratio_range: tuple[float, float] = (1.0, 4.0)
    phi_range: tuple[float, float] = (0.0, 3.141592653589793)


@dataclass
class ScaleBarOptionsSchema:
    """How the scale bar takes part in a micrograph's pixel size.

    Attributes:
      read: look for a burned-in scale bar and read it (off: metadata and override only).
        A label the reader cannot read is given per run or per file by the caller
        (``nanoshape analyze scale_bar=100nm`` or ``scale_bars=<csv>``).
      prefer: which wins when the bar and the file's metadata disagree by more than
        ``tolerance``: ``"metadata"`` (the default: an instrument's calibration is exact, a
        bar is drawn to the nearest pixel) or ``"scale_bar"``. Either way a warning says so.
      tolerance: relative disagreement of bar and metadata that raises a warning.
      min_confidence: every glyph of a label must be classified with at least this
        probability, and the label must hold this share of its line's readings, else the
        label is not trusted.
    """

    read: bool = True
    prefer: str = 'metadata'
    tolerance: float = 0.02
    min_confidence: float = 0.9


@dataclass
class SegmentOptionsSchema:
    """How :func:`segment` finds particles. Lengths are fractions of the typical particle
    radius ``r`` found in each image unless their name says otherwise.

    Attributes:
      method: 'learned' (the detector of :mod:`nanoshape.segnet`, trained on annotated and
        rendered micrographs) or 'classical' (the thresholds and watershed below, which
        the options from ``polarity`` on configure).
      model: a segmentation model directory (``nanoshape train-segmentation``); empty uses
        the one shipped with nanoshape.
      views: (learned) how many mirror images of the micrograph the detector sees, its
        outputs averaged (1, 2, 4 or 8; :func:`nanoshape.segnet._run_views`). Two against
        one: development F1 0.874 -> 0.881, rendered hard 0.797 -> 0.814, validation 0.841 ->
        0.840 (median per image 0.889 -> 0.899) at 1.33x the segmentation's time; one by
        default, as the validation part did not gain.
      zoom_small_particles: (learned) where most of what the detector sees as particle is
        under ~10 px across, also run it on the micrograph zoomed twice and take those
        particles from there (:func:`nanoshape.segnet.predict_levels`). Rendered 4 / 6 / 8 px
        spheres: F1 0.02 / 0.66 / 0.80 without, 0.66 / 0.80 / 0.83 with; off by default, as
        on the annotated micrographs where it came on (grainy carbon film) it took the
        film's grain for particles.
      polarity: 'auto' (detect), 'bright_field' (dark particles) or 'dark_field'.
      particle_diameter_px: typical particle diameter in pixels, or None to estimate it.
      working_radius_px: images are analysed block-averaged so the typical radius is at
        least this many pixels (speed); the label boundaries are then refined at full
        resolution. 0 analyses every image at full resolution.
      flatten: subtract a smooth (quadratic) background before thresholding.
      smoothing: width of the denoising Gaussian used to delineate particles.
      sparse_smoothing: width of the Gaussian used instead when the particles are sparse in
        noise (Otsu splits the background peak): close to a disc's matched filter.
      threshold_fraction: where the delineation threshold sits between the background
        level (0) and Otsu's threshold (1).
      sparse_sigmas: detection threshold, in background-peak widths above its mode, used
        when Otsu splits the background peak (very sparse particles)...
      sparse_low: ...and the delineation threshold in that case.
      hole_area: fill enclosed holes smaller than this many typical particle areas.
      speck_area: drop components smaller than this many typical particle areas.
      valley_depth: cut valleys deeper than this fraction of the particle contrast...
      valley_width: ...and narrower than this (0 disables the cut)...
      valley_level: ...whose floor lies in the lower part of the particle intensity range
        (this fraction of the contrast above the threshold): a gap, not a stripe inside a
        twinned or faceted crystal.
      split_depth: a marker must rise this much above the pass to a higher one...
      split_ratio: ...and this fraction of its own height (a neck criterion).
      landscape_smoothing: Gaussian width (working pixels) applied to the distance
        transform, whose ridges are bumpy where a boundary is jagged.
      min_inscribed_px: when the typical inscribed radius comes out under this many
        working pixels (thin rods), the image is analysed again at a finer resolution.
      remove_border: drop particles touching the image border.
      remove_overlays: find scale bars, text and data bands, and drop particles joined
        to them.
      threads: threads for the whole-image filters (bands of rows, identical results);
        0 = one per CPU core (at most 8). Runs that already use one process per core set 1.
    """

    method: str = 'learned'
    model: str = ''
    views: int = 1
    zoom_small_particles: bool = False
    polarity: str = 'auto'
    particle_diameter_px: Optional[float] = None
    working_radius_px: float = 4.0
    flatten: bool = True
    smoothing: float = 0.1
    sparse_smoothing: float = 0.35
    sparse_low: float = 4.0
    threshold_fraction: float = 0.9
    sparse_sigmas: float = 4.0
    hole_area: float = 1.0
    speck_area: float = 0.15
    valley_depth: float = 0.2
    valley_width: float = 1.5
    valley_level: float = 0.5
    split_depth: float = 0.15
    split_ratio: float = 0.2
    landscape_smoothing: float = 0.5
    min_inscribed_px: float = 4.0
    remove_border: bool = True
    remove_overlays: bool = True
    threads: int = 0


@dataclass
class CropOptionsSchema:
    """How particles are cut for the CNN.

    Attributes:
      size: side of the square crop in pixels (the CNN input size).
      margin: fraction of the particle's larger bounding-box side added on each side.
      context: if > 0, a third channel shows a window this many times wider than the main
        one (see the module docstring); 0 = two channels.
    """

    size: int = 64
    margin: float = 0.15
    context: float = 0.0


@dataclass
class ShapeOptionsSchema:
    """How each particle's shape parameters (p, d, L, phi) are found.

    Attributes:
      cnn: predict them with the CNN from each particle's crop (off: no shape parameters).
      model: a model directory from ``nanoshape train`` (the run directory or its model/);
        empty uses the model shipped with nanoshape.
      image_fit: before the refinement, fit the CNN's shape to the particle's pixels with
        the imaging model it was trained on (:mod:`nanoshape.imagefit`), the slowest shape stage;
        ``false`` skips it (the CNN's shape goes straight to the refinement).
      refine: refine the CNN's parameters by gradient descent through the renderer until
        the re-rendered shape matches the particle's mask (:mod:`nanoshape.refine`).
      batch_size: crops per CNN call.
      family: the shape family (:mod:`nanoshape.family`): ``superellipse`` (eq. 1, the
        shipped model) or another, with ``model=`` a model trained for it (``nanoshape train
        shape.family=<name>``). Other families are fitted to the crop's pixels as eq. 1 is
        (:mod:`nanoshape.imagefit`, with ``image_fit``), then to the masks by
        :func:`nanoshape.familyfit.fit_masks` (with ``refine``), and get their own columns.
    """

    cnn: bool = True
    model: str = ''
    image_fit: bool = True
    refine: bool = True
    batch_size: int = 256
    family: str = 'superellipse'


@dataclass
class ImageFitOptionsSchema:
    """Options of :func:`fit_image` (static).

    Attributes:
      iterations: Levenberg-Marquardt iterations (fixed: a compiled loop).
      prior_weight: weight of the CNN's Gaussian prior on log p, log L and phi against the
        image (1 = the predicted variances at face value).
      nuisance_std: standard deviation of a weak prior holding the nuisance unknowns
        (centre in crop px, log scale, the contrast and dome logits, log blur) near their
        start, so that a direction the image does not constrain stays put.
      blur_px_range: range of the fitted blur (crop pixels).
      second_d_min_prob: also fit the second most probable d (another family's discrete
        parameter) where the CNN gives it at least this probability (1 = never).
      bucket_sizes: crops per compiled call: each call takes the largest size that the
        crops left fill, the last few are padded to the smallest, so a small micrograph does
        not pay for a large batch and each size compiles once.
      coarse_window_px: a crop whose window in the micrograph is at most this many pixels
        across was upsampled at least twice into its S x S crop, so its 2 x 2 block means (an
        S/2 grid) hold all the micrograph's pixels: it is fitted on that grid, at about a
        quarter of the cost (0: every crop on the full grid).

    log p and log L (another family's continuous parameters) stay inside the ranges of the
    prior the CNN was trained on (:class:`nanoshape.shape.ShapePrior`, the family's prior).
    """

    iterations: int = 10
    prior_weight: float = 3.0
    nuisance_std: float = 3.0
    blur_px_range: tuple[float, float] = (0.2, 6.0)
    second_d_min_prob: float = 0.05
    bucket_sizes: tuple[int, ...] = (16, 64, 256)
    coarse_window_px: float = 32.0


@dataclass
class RefineOptionsSchema:
    """How particles are refined (static: hashable, one compilation per value).

    Attributes:
      grid_px: side of the fine fitting grid; masks are box-averaged onto it.
      coarse_grid_px: side of the grid of the search and the coarse fit.
      d_candidates: how many values of d are fitted side by side in the coarse fit (1..6).
      phase_starts: phases tried per d in the search (``phi0 + j pi / phase_starts``).
      d_prior_weight: weight of ``-log P(d)`` (the CNN's d probability) against the loss when
        ranking and choosing d; 0 trusts the mask alone.
      p_prior_weight: weight of the Gaussian prior on log p around the start (module docstring).
      shape_prior_weight: weight of the priors on log L and phi around the start (Gaussian in
        log L, periodic in phi, heavy-tailed: ``log(1 + q)`` of their penalty ``q``), for
        candidates with the start's d, times the start's probability of that d, and only
        where the caller gives their uncertainties (the CNN's); 0 = off.
      coarse_iterations, fine_iterations: Adam steps of the two fits (fixed budget).
      coarse_learning_rate, fine_learning_rate: Adam rates in units of ``step`` (see below);
        both warm up over ``warmup_fraction`` of the steps from 0, then decay to
        ``final_learning_fraction`` of themselves (cosine).
      coarse_edge_width_px: edge ramp (px of the coarse grid) at the start and end of the coarse fit.
      fine_edge_width_px: edge ramp at the start of the fine fit; it reaches 1 px halfway and stays.
      search_edge_width_px: edge ramp of the search.
      default_log_p_std, default_log_l_std, default_phi_std: uncertainty of the start when the
        caller gives none (``p_log_std``, ``l_ratio_log_std``, ``phi_std``).
      step_per_std: early step of log p, log L and phi per unit of the start's uncertainty.
      max_step_per_default: steps are clipped to [1/4, this] times the default ones.
      center_step_px, log_scale_step: early step of the centre (px of the mask grid) and log scale.
      loss_epsilon: smoothing of |a - b| in the loss.
      tolerance: converged when the fine loss changed by at most this over the last quarter of
        the fine fit (loss in units of 1 - Jaccard).
      bucket_sizes: particle counts each call is padded to (one compilation per size and mask
        side): full pieces of the largest that fits, the rest padded to the smallest that holds it.
      chunk: particles fitted at once inside a call (``lax.map`` batch; keeps intermediates in cache).
    """

    grid_px: int = 24
    coarse_grid_px: int = 24
    d_candidates: int = 2
    phase_starts: int = 8
    d_prior_weight: float = 0.1
    p_prior_weight: float = 0.1
    shape_prior_weight: float = 0.01
    coarse_iterations: int = 14
    fine_iterations: int = 20
    coarse_learning_rate: float = 1.0
    fine_learning_rate: float = 0.5
    final_learning_fraction: float = 0.1
    warmup_fraction: float = 0.2
    coarse_edge_width_px: tuple[float, float] = (3.0, 1.5)
    fine_edge_width_px: float = 1.5
    search_edge_width_px: float = 3.0
    default_log_p_std: float = 0.3
    default_log_l_std: float = 0.15
    default_phi_std: float = 0.15
    step_per_std: float = 0.5
    max_step_per_default: float = 4.0
    center_step_px: float = 0.5
    log_scale_step: float = 0.03
    loss_epsilon: float = 0.02
    tolerance: float = 0.002
    bucket_sizes: tuple[int, ...] = (32, 512)
    chunk: int = 64


@dataclass
class GroupOptionsSchema:
    """How particles are grouped and the classifier trained.

    Attributes:
      k_range: smallest and largest number of groups tried.
      seed: seed of K-means, the mixture, the train/test split and the grid search.
      datasets, methods: the combinations compared (subsets of ``features``/``parameters``/
        ``both`` and ``kmeans``/``gmm``/``ward``/``hdbscan``).
      feature_set: the descriptors of the ``features`` dataset: ``shape`` (log Feret ratio,
        circularity, solidity, :data:`AFFINE_COLUMNS`, log size) or ``classic`` (the seed
        paper's :data:`FEATURE_COLUMNS`, plus the angular harmonics where the table has them).
      choice: which grouping is used: ``hdbscan`` (the default: HDBSCAN on ``both``, else
        ``features``, K from the particles' density; the silhouette rule where it finds fewer
        than two groups), ``finest_stable`` (of HDBSCAN's grouping and the Gaussian mixtures with
        more groups than it and at most as many as the lowest BIC gives, on the same dataset: the
        one with the most groups that mixtures started from ``stable_seeds`` seeds find alike and
        that each half of the particles, grouped on its own, reproduces, both at ARI >= ``stable_ari``;
        HDBSCAN's where no mixture does),
        ``bic`` (a Gaussian mixture on the same dataset, K by the lowest Bayesian information
        criterion), ``stable`` (of those two, the one whose groups each half of the particles,
        grouped on its own, reproduces best) or ``silhouette`` (the highest silhouette value of
        all combinations, the seed paper's way).
      max_particles: a run with more usable particles is grouped on a seeded random sample of
        this many (silhouette values, Ward trees and the halves' stability are quadratic in the
        count); every other particle takes the group of the majority of its 5 nearest sampled
        neighbours and is flagged (:attr:`Grouping.assigned`, column ``group_assigned``). The
        classifier's grid search, test split and cross-validation use a seeded sample of this
        many grouped particles too. A run of at most this many is grouped and the classifier trained on
        every particle.
      use_size: include log(equivalent diameter) in the ``features`` dataset.
      parameter_space: how the fitted shape enters the ``parameters`` and ``both`` datasets:
        ``harmonics`` (the outline spectrum, default) or ``raw`` (log p, log L, d).
      min_group_fraction: a K whose smallest group holds less than this fraction of the
        particles is not chosen (a few outliers are not a shape group), and HDBSCAN's smallest
        group (``min_cluster_size``) is this fraction of the particles, at least
        ``min_group_size``.
      min_group_size: the smallest group HDBSCAN may find, however few the particles.
      stable_ari: with ``choice="finest_stable"``, the agreement (adjusted Rand index) between the
        groups of all particles and those of each half grouped on its own that a finer mixture
        must reach to be chosen (the issue's bar for "the same groups"), and between the mixtures of
        the ``stable_seeds`` seeds.
      stable_seeds: with ``choice="finest_stable"``, how many seeds (``seed`` and ones drawn from it)
        each fit the mixture of a finer K: it is chosen only where every pair of their groupings agrees
        and each passes the halves' test. A K whose groups depend on where the mixture started is the
        mixture's local optimum, not the particles' groups (on emps_train with one seed, seeds 0-3 chose
        K = 6, 2, 5 and 3, each passing its own halves' test).
      name_split: with ``choice="hdbscan"``, split each of HDBSCAN's groups where the components of the
        Gaussian mixture with the lowest BIC (on the same dataset) that fall inside it are, by their median
        particle, another canonical shape (:func:`shape_name`; "irregular particles" splits nothing) than
        the group's commonest one, each such part holding at least the smallest group's size
        (:func:`_split_by_names`). Cubes, plates and
        triangles among spheres are a tail of the spheres' cloud, not a density peak of their own, so
        HDBSCAN alone leaves them there; the mixture's components separate them but depend on its start and
        split one shape by size; their names join what the eye joins.
      test_fraction: held-out share for the classifier's test accuracy.
      cv_folds: folds of the cross-validation.
    """

    k_range: tuple[int, int] = (2, 8)
    seed: int = 0
    datasets: tuple[str, ...] = ('features', 'parameters', 'both')
    methods: tuple[str, ...] = ('kmeans', 'gmm', 'ward', 'hdbscan')
    feature_set: str = 'shape'
    choice: str = 'hdbscan'
    max_particles: int = 4000
    use_size: bool = True
    parameter_space: str = 'harmonics'
    min_group_fraction: float = 0.02
    min_group_size: int = 5
    stable_ari: float = 0.9
    stable_seeds: int = 3
    name_split: bool = True
    test_fraction: float = 0.2
    cv_folds: int = 10


@dataclass
class CNNOptionsSchema:
    """Architecture of :class:`ShapeCNN` (static; stored beside every saved model).

    Attributes:
      input_size: side of the input crops (px).
      input_channels: channels of the input crops (2, or 3 with the context window of
        :class:`nanoshape.crop.CropOptions`).
      channels: output channels of the stride-2 convolution stages (each halves the side;
        in polar geometry, the radii and the angles by ``polar_angle_strides``).
      refine_from_stage: stages from this index on add a second 3x3 convolution at the same
        size (cheap where the maps are small; the first stages stay single for speed).
      hidden: width of the dense layer before the output heads.
      log_p_center, log_p_scale: the network predicts (log p - center) / scale; set from
        the training prior (log-uniform p on [0.25, 64]).
      log_l_center, log_l_scale: the same for log L (log-uniform L on [1, 4]).
      stem_channels: (cartesian only) if > 0, a 3x3 convolution at the full input resolution comes first
        (cheap on two input channels; the first stride-2 stage then sees features instead
        of raw pixels, which keeps sub-pixel edge positions).
      phi_per_d: one (cos 2 phi, sin 2 phi) pair per d class instead of one shared pair: a
        turn of the particle by a moves phi by d a / 2, so each d needs its own read-out.
      std_scales: factors on the predicted standard deviations of (log p, log L, phi), set
        after training so that the central 90 % intervals hold 90 % of a held-out
        validation set (:func:`nanoshape.training.calibrate_uncertainties`); 1 = as trained.
      geometry: ``"polar"``: the convolutions run on the crop resampled on a polar grid
        around the mask's centroid (:func:`polar_resample`), circular along the angle, so a
        turn of the particle is a shift along one axis; p, L and d are read from
        turn-invariant summaries and phi from the angular harmonics (equivariant by
        construction). ``"cartesian"``: plain stride-2 convolutions on the crop (the models
        shipped before the polar one).
      polar_angles, polar_radii: the polar grid (angles over 2 pi, radii over the crop's half
        diagonal).
      polar_angle_strides: the angular stride of each stage in ``channels`` (the radial
        stride is 2 everywhere); the angles left at the end must resolve harmonic 6.
      polar_angular_channels: after the stages, the radii are folded into the channels and
        these circular 1-D convolutions (kernel 3) run along the angle.
      polar_features: features per angle before the summaries.
      polar_harmonics: how many angular harmonics' magnitudes enter the summaries.
      family: the shape family whose parameters the heads predict (:mod:`nanoshape.family`):
        one Gaussian head per continuous parameter, one phase pair per class of its discrete
        parameter (read from the class's angular harmonic), the class logits.
      head_centers, head_scales: the normalisation of the continuous heads of a family other
        than eq. 1 (empty: from the family's default prior); eq. 1 uses ``log_p_*``, ``log_l_*``.
    """

    input_size: int = 64
    input_channels: int = 2
    channels: tuple[int, ...] = (16, 32, 64)
    refine_from_stage: int = 3
    hidden: int = 192
    log_p_center: float = 1.3862943611198906
    log_p_scale: float = 1.6007548451372582
    log_l_center: float = 0.6931471805599453
    log_l_scale: float = 0.40018871128431455
    stem_channels: int = 0
    phi_per_d: bool = True
    std_scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    geometry: str = 'polar'
    polar_angles: int = 128
    polar_radii: int = 32
    polar_angle_strides: tuple[int, ...] = (2, 2, 2)
    polar_features: int = 128
    polar_harmonics: int = 8
    polar_angular_channels: tuple[int, ...] = (128, 128)
    family: str = 'superellipse'
    head_centers: tuple[float, ...] = ()
    head_scales: tuple[float, ...] = ()


@dataclass
class PolygonPriorSchema:
    """Training prior of rounded polygons: n uniform, rounding log-uniform, phi uniform over a period.

    Attributes:
      n_sides_values: the numbers of sides, drawn with equal probability.
      rounding_range: bounds of the log-uniform rounding (corner radius / inradius).
    """

    n_sides_values: tuple[int, ...] = (3, 4, 5, 6)
    rounding_range: tuple[float, float] = (0.03, 0.9)


@dataclass
class TrainOptionsSchema:
    """How the CNN is trained (all static and hashable).

    Attributes:
      seed: seed of the training batches and the initial weights.
      steps: optimiser steps.
      batch_size: rendered crops per step (split over the devices).
      learning_rate: peak learning rate (AdamW), reached after ``warmup_steps`` and decayed
        to 2% by a cosine over the rest.
      warmup_steps: linear warm-up.
      weight_decay: AdamW decoupled weight decay.
      clip_norm: global gradient-norm clipping.
      validation_size, validation_seed: the fixed validation set, scored every
        ``validation_every`` steps.
      test_size, test_seed: the fixed test set scored at the end (the seed paper's 20 % of
        65,000 images is 13,000).
      checkpoint_every: steps between checkpoints (and metric lines).
      keep_checkpoints: checkpoints kept on disk.
      devices: how many JAX devices to shard the batch over (0 = all).
      render_chunk: crops rendered per ``lax.map`` iteration.
      nll_beta: the beta of the beta-NLL (Seitzer et al., ICLR 2022): each Gaussian term
        (log p, log L, phi) is weighted by its predicted variance to the power beta (held
        constant in the gradient), so that hard, high-variance examples (the boxy shapes'
        log p) still pull on the mean; 0 = the plain negative log-likelihood (the default).
        It also shifts weight between the terms: phi and L, predicted precisely, weigh
        less.
      model: the architecture; ``model.family`` chooses the shape family
        (:mod:`nanoshape.family`; ``nanoshape train shape.family=<name>`` sets it).
      prior: the shape prior of the rendered particles (eq. 1, ``superellipse``).
      polygon_prior: the shape prior of the ``polygon`` family.
      imaging: the TEM imaging model.
      crop: the crop size and margin (must match ``model.input_size``).
    """

    seed: int = 0
    steps: int = 16000
    batch_size: int = 128
    learning_rate: float = 0.002
    warmup_steps: int = 200
    weight_decay: float = 0.0001
    clip_norm: float = 5.0
    validation_size: int = 2048
    validation_seed: int = 1000003
    validation_every: int = 1000
    test_size: int = 13000
    test_seed: int = 2000003
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    devices: int = 0
    render_chunk: int = 128
    nll_beta: float = 0.0
    model: CNNOptionsSchema = field(default_factory=CNNOptionsSchema)
    prior: ShapePriorSchema = field(default_factory=ShapePriorSchema)
    polygon_prior: PolygonPriorSchema = field(default_factory=PolygonPriorSchema)
    imaging: ImagingSchema = field(default_factory=ImagingSchema)
    crop: CropOptionsSchema = field(default_factory=CropOptionsSchema)


@dataclass
class SegNetOptionsSchema:
    """Architecture of the U-Net and how it is applied.

    Attributes:
      channels: feature channels at each resolution of the U-Net (one max-pool between
        levels); the receptive field grows with the number of levels.
      target_diameter_px: particle diameter (network pixels) the pyramid aims at; each
        pixel is taken from the level whose predicted size is nearest it.
      min_level_side_px: pyramid levels stop before the shorter image side falls under this.
      tile_px: images (pyramid levels) larger than this are run in overlapping tiles of this
        side (a multiple of 32)... 2304 runs a 2048 x 2048 micrograph's finest level (2240 px
        with its margins) in one call: in 1024 px tiles it was 9 tiles of 1024^2 px, 1.9x the
        work (each tile's margins are computed and thrown away) and 1.9x the time of the
        whole pyramid (5.5 s -> 2.9 s, this 2-core CPU), in the same peak memory (a call holds
        at most :data:`CALL_PX` pixels).
      tile_margin_px: ...whose outer margin, discarded, is this wide.
      edge_px: a level run in one call is reflect-padded by this much on every side (its
        edge pixels see a mirror image rather than zeros). 32 (the deepest feature map's
        pixel) rather than the tile margin's 96: on the development part and the rendered
        sets, F1 of ``detect`` moved by -0.004..+0.009 over margins of 16-96 px (0.871 /
        0.984 / 0.799 at 96; 0.871 / 0.984 / 0.808 at 32), while a 512 x 512 micrograph's
        pyramid costs 1.6x less (0.39 -> 0.24 s): its finest level is 576^2 px of work, not 704^2.
    """

    channels: tuple[int, ...] = (8, 16, 32, 64, 96, 128)
    target_diameter_px: float = 24.0
    min_level_side_px: int = 48
    tile_px: int = 2304
    tile_margin_px: int = 96
    edge_px: int = 32


@dataclass
class SegTrainOptionsSchema:
    """How the detector is trained.

    Attributes:
      model: the architecture.
      steps: optimiser steps.
      batch_size: patches per step.
      patch_px: side of a training patch (network pixels; a multiple of ``model.multiple``).
      learning_rate: peak learning rate (warm-up then cosine decay).
      warmup_steps: linear warm-up steps.
      weight_decay: AdamW weight decay.
      size_weight: weight of the log2 size loss.
      focus_diameter_px: range of the sources' median particle diameter at the drawn zoom
        (network pixels) for most patches...
      wide_diameter_px: ...and for the rest (``wide_fraction``), so the size output learns
        what lies outside the focus range.
      wide_fraction: share of patches drawn from the wide range.
      max_zoom: largest zoom (network pixels per source pixel); inference never upsamples,
        so this stays near 1.
      foreground_centre_fraction: share of patches centred on a particle pixel.
      rendered_fraction: share of patches cut from rendered micrographs.
      seed: seed of the initial weights and of the patch draws.
      checkpoint_every: steps between checkpoints.
      log_every: steps between records of ``metrics.jsonl`` (means over those steps).
      loader_threads: threads cutting patches beside the training step.
    """

    model: SegNetOptionsSchema = field(default_factory=SegNetOptionsSchema)
    steps: int = 8000
    batch_size: int = 16
    patch_px: int = 128
    learning_rate: float = 0.002
    warmup_steps: int = 200
    weight_decay: float = 0.0001
    size_weight: float = 0.5
    focus_diameter_px: tuple[float, float] = (6.0, 64.0)
    wide_diameter_px: tuple[float, float] = (2.0, 512.0)
    wide_fraction: float = 0.4
    max_zoom: float = 1.5
    foreground_centre_fraction: float = 0.6
    rendered_fraction: float = 0.35
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    loader_threads: int = 2
