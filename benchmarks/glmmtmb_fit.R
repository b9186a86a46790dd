# Fit one glmmTMB model for benchmarks/bench_mixed.py and print its figures as one JSON line.
#
# Usage: Rscript glmmtmb_fit.R TRAIN.csv TEST.csv FORMULA FAMILY FACTORS REPEATS [WARMUP]
#                              [ZIFORMULA]
#   FORMULA  an lme4-style formula, e.g. "TICKS ~ YEAR + HEIGHT + (1|BROOD)"
#   FAMILY   poisson or nbinom2 (log link: glmmTMB has no softplus link)
#   FACTORS  comma-separated columns to read as factors ("" for none)
#   REPEATS  fits to time (the median is reported; the library load is not timed)
#   WARMUP   untimed fits before those (default 0): the first fit in a session pays for
#            loading code lazily
#   ZIFORMULA  glmmTMB's ziformula (default "~0": no zero inflation), e.g. "~ (1|g)"
# Held-out rows are scored with the conditional modes of their groups (every test group is
# seen in training): log p(y | mu) summed over the test rows.
suppressMessages(library(glmmTMB))
args <- commandArgs(trailingOnly = TRUE)
train <- read.csv(args[1])
test <- read.csv(args[2])
form <- as.formula(args[3])
family_name <- args[4]
factors <- if (nchar(args[5]) > 0) strsplit(args[5], ",")[[1]] else character(0)
repeats <- as.integer(args[6])
warmup <- if (length(args) >= 7) as.integer(args[7]) else 0L
zi <- as.formula(if (length(args) >= 8) args[8] else "~0")
inflated <- length(all.vars(zi)) > 0 || attr(terms(zi), "intercept") == 1
for (f in factors) {
  levels <- sort(unique(c(train[[f]], test[[f]])))
  train[[f]] <- factor(train[[f]], levels = levels)
  test[[f]] <- factor(test[[f]], levels = levels)
}
family <- if (family_name == "poisson") poisson() else nbinom2()
for (i in seq_len(warmup)) fit <- glmmTMB(form, ziformula = zi, family = family, data = train)
times <- numeric(repeats)
cpu <- numeric(repeats)  # user + system CPU seconds: steadier than wall time on a busy host
for (i in seq_len(repeats)) {
  t0 <- proc.time()
  fit <- glmmTMB(form, ziformula = zi, family = family, data = train)
  t1 <- proc.time()
  times[i] <- t1[["elapsed"]] - t0[["elapsed"]]
  cpu[i] <- (t1[["user.self"]] + t1[["sys.self"]]) - (t0[["user.self"]] + t0[["sys.self"]])
}
mu <- predict(fit, newdata = test, type = "response", allow.new.levels = FALSE)
y <- test[[all.vars(form)[1]]]
count_lp <- function(y, mu) {  # the count law's log p(y | mu)
  if (family_name == "poisson") dpois(y, mu, log = TRUE)
  else dnbinom(y, size = sigma(fit), mu = mu, log = TRUE)
}
lpd <- if (inflated) {  # zero-inflated: the count mean and the zero probability
  mu_c <- predict(fit, newdata = test, type = "conditional", allow.new.levels = FALSE)
  p0 <- predict(fit, newdata = test, type = "zprob", allow.new.levels = FALSE)
  sum(ifelse(y == 0, log(p0 + (1 - p0) * exp(count_lp(0 * y, mu_c))),
             log1p(-p0) + count_lp(y, mu_c)))
} else if (family_name == "poisson") {
  sum(dpois(y, mu, log = TRUE))
} else {
  sum(dnbinom(y, size = sigma(fit), mu = mu, log = TRUE))
}
vc <- c(VarCorr(fit)$cond, if (inflated) VarCorr(fit)$zi)
sds <- unlist(lapply(vc, function(m) attr(m, "stddev")))
conv <- fit$fit$convergence
cat(sprintf(
  '{"time_median": %.6f, "cpu_median": %.6f, "loglik": %.6f, "heldout_lpd": %.6f, "n_test": %d, "convergence": %d, "sds": [%s], "fixef": [%s], "fixef_zi": [%s]}\n',
  median(times), median(cpu), as.numeric(logLik(fit)), lpd, length(y), conv,
  paste(sprintf("%.6f", sds), collapse = ", "),
  paste(sprintf("%.6f", fixef(fit)$cond), collapse = ", "),
  paste(sprintf("%.6f", if (inflated) fixef(fit)$zi else numeric(0)), collapse = ", ")
))
