#include "policies/ilp.hpp"

#include <glpk.h>

#include <mutex>

namespace moesim::ilp {

Solution solve(const Program& p, int time_limit_ms, double mip_gap) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  glp_term_out(GLP_OFF);
  glp_prob* lp = glp_create_prob();
  glp_set_obj_dir(lp, p.maximize ? GLP_MAX : GLP_MIN);
  const int n = static_cast<int>(p.binary.size());
  glp_add_cols(lp, n);
  for (int j = 0; j < n; ++j) {
    glp_set_col_kind(lp, j + 1, p.binary[static_cast<std::size_t>(j)] != 0 ? GLP_BV : GLP_CV);
    if (p.binary[static_cast<std::size_t>(j)] == 0) glp_set_col_bnds(lp, j + 1, GLP_LO, 0.0, 0.0);
    glp_set_obj_coef(lp, j + 1, p.objective[static_cast<std::size_t>(j)]);
  }
  glp_add_rows(lp, static_cast<int>(p.rows.size()));
  std::vector<int> ia{0}, ja{0};
  std::vector<double> ar{0.0};
  for (std::size_t r = 0; r < p.rows.size(); ++r) {
    const Program::Row& row = p.rows[r];
    const int i = static_cast<int>(r) + 1;
    const int type = row.has_lo && row.has_hi ? (row.lo == row.hi ? GLP_FX : GLP_DB) : row.has_lo ? GLP_LO : GLP_UP;
    glp_set_row_bnds(lp, i, type, row.lo, row.hi);
    for (const auto& [j, a] : row.terms) {
      ia.push_back(i);
      ja.push_back(j + 1);
      ar.push_back(a);
    }
  }
  glp_load_matrix(lp, static_cast<int>(ia.size()) - 1, ia.data(), ja.data(), ar.data());
  glp_iocp parm;
  glp_init_iocp(&parm);
  parm.msg_lev = GLP_MSG_OFF;
  parm.presolve = GLP_ON;
  parm.tm_lim = time_limit_ms;
  parm.mip_gap = mip_gap;
  parm.mir_cuts = GLP_ON;
  parm.cov_cuts = GLP_ON;
  Solution out;
  const int rc = glp_intopt(lp, &parm);
  const int status = glp_mip_status(lp);
  if ((rc == 0 || rc == GLP_EMIPGAP) && (status == GLP_OPT || status == GLP_FEAS)) {
    out.solved = true;
    out.x.resize(static_cast<std::size_t>(n));
    for (int j = 0; j < n; ++j) out.x[static_cast<std::size_t>(j)] = glp_mip_col_val(lp, j + 1);
  } else {
    out.why = rc == GLP_ETMLIM         ? "time limit"
              : rc == GLP_ENOPFS || status == GLP_NOFEAS ? "infeasible"
                                                          : "GLPK stopped with code " + std::to_string(rc);
  }
  glp_delete_prob(lp);
  return out;
}

}  // namespace moesim::ilp
