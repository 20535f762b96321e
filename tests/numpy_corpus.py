"""Classical optimization test functions, written as plain numpy the way their published
definitions read (Surjanovic & Bingham's Virtual Library of Simulation Experiments; Jamil &
Yang, "A literature survey of benchmark functions for global optimization problems", 2013;
scipy.optimize.rosen). None of them knows about tapejit: the tests call them unmodified on
tensors. Each entry: (name, function of a 1-d array, a point where it is smooth)."""
import numpy as np

pi, e = np.pi, np.e


def ackley(x):
    d = len(x)
    return -20 * np.exp(-0.2 * np.sqrt(np.sum(x ** 2) / d)) - np.exp(np.sum(np.cos(2 * pi * x)) / d) + 20 + e


def griewank(x):
    i = np.arange(1, len(x) + 1)
    return np.sum(x ** 2) / 4000 - np.prod(np.cos(x / np.sqrt(i))) + 1


def levy(x):
    w = 1 + (x - 1) / 4
    term1 = np.sin(pi * w[0]) ** 2
    term3 = (w[-1] - 1) ** 2 * (1 + np.sin(2 * pi * w[-1]) ** 2)
    wi = w[:-1]
    return term1 + np.sum((wi - 1) ** 2 * (1 + 10 * np.sin(pi * wi + 1) ** 2)) + term3


def michalewicz(x, m=10):
    i = np.arange(1, len(x) + 1)
    return -np.sum(np.sin(x) * np.sin(i * x ** 2 / pi) ** (2 * m))


def schwefel(x):
    return 418.9829 * len(x) - np.sum(x * np.sin(np.sqrt(np.abs(x))))


def styblinski_tang(x):
    return np.sum(x ** 4 - 16 * x ** 2 + 5 * x) / 2


def powell(x):
    x1, x2, x3, x4 = x[0::4], x[1::4], x[2::4], x[3::4]
    return np.sum((x1 + 10 * x2) ** 2 + 5 * (x3 - x4) ** 2 + (x2 - 2 * x3) ** 4 + 10 * (x1 - x4) ** 4)


def dixon_price(x):
    i = np.arange(2, len(x) + 1)
    return (x[0] - 1) ** 2 + np.sum(i * (2 * x[1:] ** 2 - x[:-1]) ** 2)


def zakharov(x):
    i = np.arange(1, len(x) + 1)
    s = np.sum(0.5 * i * x)
    return np.sum(x ** 2) + s ** 2 + s ** 4


def trid(x):
    return np.sum((x - 1) ** 2) - np.sum(x[1:] * x[:-1])


def rastrigin(x):
    return 10 * len(x) + np.sum(x ** 2 - 10 * np.cos(2 * pi * x))


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2.0) ** 2.0 + (1 - x[:-1]) ** 2.0)


def sphere(x):
    return np.sum(x ** 2)


def sum_of_different_powers(x):
    return np.sum(np.abs(x) ** np.arange(2, len(x) + 2))


def sum_squares(x):
    return np.sum(np.arange(1, len(x) + 1) * x ** 2)


def rotated_hyper_ellipsoid(x):
    return np.sum(np.cumsum(x ** 2))


def beale(x):
    return (1.5 - x[0] + x[0] * x[1]) ** 2 + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2 + \
        (2.625 - x[0] + x[0] * x[1] ** 3) ** 2


def booth(x):
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def branin(x, a=1.0, b=5.1 / (4 * pi ** 2), c=5 / pi, r=6.0, s=10.0, t=1 / (8 * pi)):
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * np.cos(x[0]) + s


def bukin6(x):
    return 100 * np.sqrt(np.abs(x[1] - 0.01 * x[0] ** 2)) + 0.01 * np.abs(x[0] + 10)


def cross_in_tray(x):
    fact = np.abs(np.sin(x[0]) * np.sin(x[1]) * np.exp(np.abs(100 - np.sqrt(x[0] ** 2 + x[1] ** 2) / pi)))
    return -0.0001 * (fact + 1) ** 0.1


def drop_wave(x):
    r2 = x[0] ** 2 + x[1] ** 2
    return -(1 + np.cos(12 * np.sqrt(r2))) / (0.5 * r2 + 2)


def easom(x):
    return -np.cos(x[0]) * np.cos(x[1]) * np.exp(-(x[0] - pi) ** 2 - (x[1] - pi) ** 2)


def eggholder(x):
    return -(x[1] + 47) * np.sin(np.sqrt(np.abs(x[1] + x[0] / 2 + 47))) - x[0] * np.sin(np.sqrt(np.abs(x[0] - (x[1] + 47))))


def goldstein_price(x):
    x1, x2 = x[0], x[1]
    a = 1 + (x1 + x2 + 1) ** 2 * (19 - 14 * x1 + 3 * x1 ** 2 - 14 * x2 + 6 * x1 * x2 + 3 * x2 ** 2)
    b = 30 + (2 * x1 - 3 * x2) ** 2 * (18 - 32 * x1 + 12 * x1 ** 2 + 48 * x2 - 36 * x1 * x2 + 27 * x2 ** 2)
    return a * b


def himmelblau(x):
    return (x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2


def holder_table(x):
    return -np.abs(np.sin(x[0]) * np.cos(x[1]) * np.exp(np.abs(1 - np.sqrt(x[0] ** 2 + x[1] ** 2) / pi)))


def matyas(x):
    return 0.26 * (x[0] ** 2 + x[1] ** 2) - 0.48 * x[0] * x[1]


def mccormick(x):
    return np.sin(x[0] + x[1]) + (x[0] - x[1]) ** 2 - 1.5 * x[0] + 2.5 * x[1] + 1


def schaffer2(x):
    return 0.5 + (np.sin(x[0] ** 2 - x[1] ** 2) ** 2 - 0.5) / (1 + 0.001 * (x[0] ** 2 + x[1] ** 2)) ** 2


def schaffer4(x):
    return 0.5 + (np.cos(np.sin(np.abs(x[0] ** 2 - x[1] ** 2))) ** 2 - 0.5) / (1 + 0.001 * (x[0] ** 2 + x[1] ** 2)) ** 2


def six_hump_camel(x):
    x1, x2 = x
    return (4 - 2.1 * x1 ** 2 + x1 ** 4 / 3) * x1 ** 2 + x1 * x2 + (-4 + 4 * x2 ** 2) * x2 ** 2


def three_hump_camel(x):
    return 2 * x[0] ** 2 - 1.05 * x[0] ** 4 + x[0] ** 6 / 6 + x[0] * x[1] + x[1] ** 2


def shubert(x):
    i = np.arange(1, 6)
    return np.sum(i * np.cos((i + 1) * x[0] + i)) * np.sum(i * np.cos((i + 1) * x[1] + i))


def perm_0_d_beta(x, beta=10.0):
    d = len(x)
    j = np.arange(1, d + 1)
    total = 0.0
    for i in range(1, d + 1):
        total = total + np.sum((j + beta) * (x ** i - 1.0 / j ** i)) ** 2
    return total


def colville(x):
    x1, x2, x3, x4 = x
    return (100 * (x1 ** 2 - x2) ** 2 + (x1 - 1) ** 2 + (x3 - 1) ** 2 + 90 * (x3 ** 2 - x4) ** 2
            + 10.1 * ((x2 - 1) ** 2 + (x4 - 1) ** 2) + 19.8 * (x2 - 1) * (x4 - 1))


_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]])
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                  [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann3(x):
    return -np.sum(_ALPHA * np.exp(-np.sum(_H3_A * (x - _H3_P) ** 2, axis=1)))


def hartmann6(x):
    return -np.sum(_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1)))


_SHEKEL_C = 0.1 * np.array([1, 2, 2, 4, 4, 6, 3, 7, 5, 5])
_SHEKEL_C4 = np.array([[4, 1, 8, 6, 3, 2, 5, 8, 6, 7], [4, 1, 8, 6, 7, 9, 3, 1, 2, 3.6],
                       [4, 1, 8, 6, 3, 2, 5, 8, 6, 7], [4, 1, 8, 6, 7, 9, 3, 1, 2, 3.6]], dtype=float)


def shekel(x, m=10):
    total = 0.0
    for i in range(m):
        total = total - 1.0 / (np.sum((x - _SHEKEL_C4[:, i]) ** 2) + _SHEKEL_C[i])
    return total


_LANG_A = np.array([[3.0, 5], [5, 2], [2, 1], [1, 4], [7, 9]])
_LANG_C = np.array([1.0, 2, 5, 2, 3])


def langermann(x):
    r2 = np.sum((x - _LANG_A) ** 2, axis=1)
    return np.sum(_LANG_C * np.exp(-r2 / pi) * np.cos(pi * r2))


def bohachevsky1(x):
    return x[0] ** 2 + 2 * x[1] ** 2 - 0.3 * np.cos(3 * pi * x[0]) - 0.4 * np.cos(4 * pi * x[1]) + 0.7


def bohachevsky2(x):
    return x[0] ** 2 + 2 * x[1] ** 2 - 0.3 * np.cos(3 * pi * x[0]) * np.cos(4 * pi * x[1]) + 0.3


def bohachevsky3(x):
    return x[0] ** 2 + 2 * x[1] ** 2 - 0.3 * np.cos(3 * pi * x[0] + 4 * pi * x[1]) + 0.3


_DJ5 = np.array([[-32.0, -16, 0, 16, 32] * 5, np.repeat([-32.0, -16, 0, 16, 32], 5)])


def de_jong5(x):
    i = np.arange(1, 26)
    return 1.0 / (0.002 + np.sum(1.0 / (i + (x[0] - _DJ5[0]) ** 6 + (x[1] - _DJ5[1]) ** 6)))


def alpine1(x):
    return np.sum(np.abs(x * np.sin(x) + 0.1 * x))


def alpine2(x):
    return np.prod(np.sqrt(x) * np.sin(x))


def salomon(x):
    r = np.sqrt(np.sum(x ** 2))
    return 1 - np.cos(2 * pi * r) + 0.1 * r


def qing(x):
    return np.sum((x ** 2 - np.arange(1, len(x) + 1)) ** 2)


def quartic(x):
    return np.sum(np.arange(1, len(x) + 1) * x ** 4)


def exponential(x):
    return -np.exp(-0.5 * np.sum(x ** 2))


def cosine_mixture(x):
    return -0.1 * np.sum(np.cos(5 * pi * x)) + np.sum(x ** 2)


def brown(x):
    a, b = x[:-1] ** 2, x[1:] ** 2
    return np.sum(a ** (b + 1) + b ** (a + 1))


def chung_reynolds(x):
    return np.sum(x ** 2) ** 2


def csendes(x):
    return np.sum(x ** 6 * (2 + np.sin(1 / x)))


def deb1(x):
    return -np.mean(np.sin(5 * pi * x) ** 6)


def happy_cat(x, alpha=0.125):
    d = len(x)
    r2 = np.sum(x ** 2)
    return ((r2 - d) ** 2) ** alpha + (0.5 * r2 + np.sum(x)) / d + 0.5


def hgbat(x):
    d = len(x)
    r2, s = np.sum(x ** 2), np.sum(x)
    return np.abs(r2 ** 2 - s ** 2) ** 0.5 + (0.5 * r2 + s) / d + 0.5


def xin_she_yang2(x):
    return np.sum(np.abs(x)) * np.exp(-np.sum(np.sin(x ** 2)))


def xin_she_yang4(x):
    return (np.sum(np.sin(x) ** 2) - np.exp(-np.sum(x ** 2))) * np.exp(-np.sum(np.sin(np.sqrt(np.abs(x))) ** 2))


def weierstrass(x, a=0.5, b=3.0, kmax=4):
    # kmax = 20 in the literature; its 3**20 frequencies leave no derivative to check against
    k = np.arange(kmax + 1)
    total = 0.0
    for xi in x:
        total = total + np.sum(a ** k * np.cos(2 * pi * b ** k * (xi + 0.5)))
    return total - len(x) * np.sum(a ** k * np.cos(pi * b ** k))


def schwefel_2_22(x):
    return np.sum(np.abs(x)) + np.prod(np.abs(x))


def schwefel_1_2(x):
    return np.sum(np.cumsum(x) ** 2)


def schwefel_2_21(x):
    return np.max(np.abs(x))


def step(x):
    return np.sum(np.floor(x + 0.5) ** 2) + np.sum(x ** 2) * 1e-3


def bird(x):
    return np.sin(x[0]) * np.exp((1 - np.cos(x[1])) ** 2) + np.cos(x[1]) * np.exp((1 - np.sin(x[0])) ** 2) + \
        (x[0] - x[1]) ** 2


def keane(x):
    return -np.sin(x[0] - x[1]) ** 2 * np.sin(x[0] + x[1]) ** 2 / np.sqrt(x[0] ** 2 + x[1] ** 2)


def leon(x):
    return 100 * (x[1] - x[0] ** 3) ** 2 + (1 - x[0]) ** 2


def price1(x):
    return (np.abs(x[0]) - 5) ** 2 + (np.abs(x[1]) - 5) ** 2


def wolfe(x):
    return 4 / 3 * (x[0] ** 2 + x[1] ** 2 - x[0] * x[1]) ** 0.75 + x[2]


def zettl(x):
    return (x[0] ** 2 + x[1] ** 2 - 2 * x[0]) ** 2 + 0.25 * x[0]


def periodic(x):
    return 1 + np.sum(np.sin(x) ** 2) - 0.1 * np.exp(-np.sum(x ** 2))


def rastrigin_rounded(x):
    # Rastrigin's non-continuous variant: y = x where |x| < 0.5, else round(2x)/2
    y = np.where(np.abs(x) < 0.5, x, np.round(2 * x) / 2)
    return 10 * len(x) + np.sum(y ** 2 - 10 * np.cos(2 * pi * y))


def sargan(x):
    d = len(x)
    return np.sum(d * (x ** 2 + 0.4 * np.sum(np.outer(x, x) - np.diag(x ** 2), axis=1)))


def quadratic_form(x):
    a = np.arange(1.0, 1.0 + len(x) ** 2).reshape(len(x), len(x)) / 10.0
    m = a @ a.T + np.eye(len(x))
    return 0.5 * x @ m @ x - np.dot(np.linspace(1, 2, len(x)), x)


def log_sum_exp_regression(x):
    a = np.cos(np.arange(12.0).reshape(4, 3))
    z = a @ x
    top = np.max(z)
    return top + np.log(np.sum(np.exp(z - top))) + 0.1 * np.linalg.norm(x) ** 2


def sorted_weights(x):
    # an order statistic (OWA): weights applied to the sorted values
    return np.sum(np.sort(x) * np.linspace(1.0, 2.0, len(x))) + np.sum(np.diff(x) ** 2)


def periodic_mod(x):
    return np.sum(np.sin(x % (2 * pi)) * x) + np.sum((x // 1.0) * x)


CORPUS = [
    ("ackley", ackley, np.array([0.3, -0.7, 1.1, 0.45])),
    ("griewank", griewank, np.array([1.5, -2.2, 3.1, 0.7, -0.4])),
    ("levy", levy, np.array([1.3, -0.6, 2.2, 0.8])),
    ("michalewicz", michalewicz, np.array([2.2, 1.57, 1.3, 1.9])),
    ("schwefel", schwefel, np.array([420.0, -300.5, 200.3])),
    ("styblinski_tang", styblinski_tang, np.array([-2.9, 1.1, 0.4, -0.7])),
    ("powell", powell, np.array([3.0, -1.0, 0.5, 1.0, 0.2, 0.3, -0.4, 0.8])),
    ("dixon_price", dixon_price, np.array([1.1, 0.7, -0.6, 0.9])),
    ("zakharov", zakharov, np.array([0.3, -0.2, 0.5, 0.1])),
    ("trid", trid, np.array([2.0, 3.5, 1.2, -0.4])),
    ("rastrigin", rastrigin, np.array([0.3, -1.2, 2.7, 0.15])),
    ("rosenbrock", rosenbrock, np.array([1.3, 0.7, 0.8, 1.9, 1.2])),
    ("sphere", sphere, np.array([0.3, -1.2, 2.7])),
    ("sum_of_different_powers", sum_of_different_powers, np.array([0.3, -0.5, 0.8, -0.9])),
    ("sum_squares", sum_squares, np.array([0.3, -0.5, 0.8, -0.9])),
    ("rotated_hyper_ellipsoid", rotated_hyper_ellipsoid, np.array([0.3, -0.5, 0.8, -0.9])),
    ("beale", beale, np.array([1.5, 0.7])),
    ("booth", booth, np.array([0.4, 2.1])),
    ("branin", branin, np.array([-2.1, 9.3])),
    ("bukin6", bukin6, np.array([-9.0, 1.3])),
    ("cross_in_tray", cross_in_tray, np.array([1.2, 1.6])),
    ("drop_wave", drop_wave, np.array([0.6, -0.8])),
    ("easom", easom, np.array([3.0, 3.3])),
    ("eggholder", eggholder, np.array([400.0, 300.0])),
    ("goldstein_price", goldstein_price, np.array([0.3, -0.8])),
    ("himmelblau", himmelblau, np.array([2.5, 1.7])),
    ("holder_table", holder_table, np.array([7.5, 9.3])),
    ("matyas", matyas, np.array([1.3, -0.8])),
    ("mccormick", mccormick, np.array([-0.3, -1.2])),
    ("schaffer2", schaffer2, np.array([0.7, 1.4])),
    ("schaffer4", schaffer4, np.array([0.9, 1.6])),
    ("six_hump_camel", six_hump_camel, np.array([0.2, -0.6])),
    ("three_hump_camel", three_hump_camel, np.array([0.8, -0.3])),
    ("shubert", shubert, np.array([-1.2, 0.5])),
    ("perm_0_d_beta", perm_0_d_beta, np.array([0.8, 0.3, 0.4])),
    ("colville", colville, np.array([1.2, 0.9, 0.8, 1.1])),
    ("hartmann3", hartmann3, np.array([0.2, 0.5, 0.8])),
    ("hartmann6", hartmann6, np.array([0.2, 0.15, 0.47, 0.27, 0.31, 0.65])),
    ("shekel", shekel, np.array([4.2, 3.9, 4.1, 3.8])),
    ("langermann", langermann, np.array([2.7, 4.1])),
    ("bohachevsky1", bohachevsky1, np.array([0.3, -0.2])),
    ("bohachevsky2", bohachevsky2, np.array([0.3, -0.2])),
    ("bohachevsky3", bohachevsky3, np.array([0.3, -0.2])),
    ("de_jong5", de_jong5, np.array([-31.0, -30.5])),
    ("alpine1", alpine1, np.array([0.7, -1.3, 2.1])),
    ("alpine2", alpine2, np.array([2.1, 7.9, 1.2])),
    ("salomon", salomon, np.array([0.3, -0.4, 0.2])),
    ("qing", qing, np.array([1.2, 1.3, 1.9])),
    ("quartic", quartic, np.array([0.3, -0.5, 0.8])),
    ("exponential", exponential, np.array([0.3, -0.5, 0.8])),
    ("cosine_mixture", cosine_mixture, np.array([0.3, -0.45, 0.12])),
    ("brown", brown, np.array([0.3, -0.5, 0.8, 0.6])),
    ("chung_reynolds", chung_reynolds, np.array([0.3, -0.5, 0.8])),
    ("csendes", csendes, np.array([0.3, -0.5, 0.8])),
    ("deb1", deb1, np.array([0.13, -0.27, 0.41])),
    ("happy_cat", happy_cat, np.array([0.3, -0.5, 0.8])),
    ("hgbat", hgbat, np.array([0.3, -0.5, 0.9])),
    ("xin_she_yang2", xin_she_yang2, np.array([0.3, -0.5, 0.8])),
    ("xin_she_yang4", xin_she_yang4, np.array([0.3, -0.5, 0.8])),
    ("weierstrass", weierstrass, np.array([0.13, -0.21])),
    ("schwefel_2_22", schwefel_2_22, np.array([0.3, -0.5, 0.8])),
    ("schwefel_1_2", schwefel_1_2, np.array([0.3, -0.5, 0.8])),
    ("schwefel_2_21", schwefel_2_21, np.array([0.3, -0.5, 0.8])),
    ("step", step, np.array([0.3, -1.2, 2.7])),
    ("bird", bird, np.array([4.7, 3.2])),
    ("keane", keane, np.array([1.4, 0.3])),
    ("leon", leon, np.array([0.8, 0.6])),
    ("price1", price1, np.array([4.2, -3.7])),
    ("wolfe", wolfe, np.array([0.6, 0.2, 0.4])),
    ("zettl", zettl, np.array([0.2, 0.3])),
    ("periodic", periodic, np.array([0.3, -0.5, 0.8])),
    ("rastrigin_rounded", rastrigin_rounded, np.array([0.3, -1.2, 2.7, 0.15])),
    ("sargan", sargan, np.array([0.3, -0.5, 0.8])),
    ("quadratic_form", quadratic_form, np.array([0.3, -0.5, 0.8, 0.1])),
    ("log_sum_exp_regression", log_sum_exp_regression, np.array([0.3, -0.5, 0.8])),
    ("sorted_weights", sorted_weights, np.array([0.3, -0.5, 0.8, 0.1])),
    ("periodic_mod", periodic_mod, np.array([0.3, -0.5, 7.8, 2.1])),
]
