#include "policies/ilp.hpp"

#include <glpk.h>

#include <mutex>

namespace moesim::ilp {

namespace {

// What branch and bound's callback keeps: the start, offered once at the first request for a
// heuristic solution (in the original columns: solve() turns the presolver off then), and the
// count of subproblems selected, against the node limit.
struct Search {
  std::vector<double> start;  // 1-based, as GLPK indexes columns; empty: none
  bool offered = false;
  int nodes = 0, node_limit = 0;
  bool stopped = false;
  double gap = 0.0;
};

void on_event(glp_tree* tree, void* info) {
  auto* s = static_cast<Search*>(info);
  const int reason = glp_ios_reason(tree);
  if (reason == GLP_IHEUR && !s->offered && !s->start.empty()) {
    s->offered = true;
    (void)glp_ios_heur_sol(tree, s->start.data());
  }
  if (reason == GLP_ISELECT && ++s->nodes > s->node_limit) {
    s->stopped = true;
    s->gap = glp_ios_mip_gap(tree);
    glp_ios_terminate(tree);
  }
}

}  // namespace

Solution solve(const Program& p, int time_limit_ms, double mip_gap, int node_limit) {
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
  Search search;
  search.node_limit = node_limit;
  parm.cb_func = on_event;
  parm.cb_info = &search;
  if (p.start.size() == p.binary.size()) {
    search.start.assign(1, 0.0);
    search.start.insert(search.start.end(), p.start.begin(), p.start.end());
  }
  Solution out;
  if (!search.start.empty()) {
    // A heuristic solution is given in the columns of the problem branch and bound sees, which
    // the MIP presolver would change: without it, glp_intopt needs the LP relaxation solved.
    parm.presolve = GLP_OFF;
    glp_smcp lp_parm;
    glp_init_smcp(&lp_parm);
    lp_parm.msg_lev = GLP_MSG_OFF;
    lp_parm.tm_lim = time_limit_ms;
    if (glp_simplex(lp, &lp_parm) != 0 || glp_get_status(lp) != GLP_OPT) {
      out.why = "LP relaxation not solved";
      glp_delete_prob(lp);
      return out;
    }
  }
  const int rc = glp_intopt(lp, &parm);
  const int status = glp_mip_status(lp);
  const bool stopped = rc == GLP_ESTOP && search.stopped;
  if ((rc == 0 || rc == GLP_EMIPGAP || stopped) && (status == GLP_OPT || status == GLP_FEAS)) {
    out.solved = true;
    out.node_limit = stopped;
    out.gap = search.gap;
    out.x.resize(static_cast<std::size_t>(n));
    for (int j = 0; j < n; ++j) out.x[static_cast<std::size_t>(j)] = glp_mip_col_val(lp, j + 1);
  } else {
    out.why = rc == GLP_ETMLIM                            ? "time limit"
              : rc == GLP_ENOPFS || status == GLP_NOFEAS ? "infeasible"
              : stopped                                   ? "node limit without a solution"
                                                          : "GLPK stopped with code " + std::to_string(rc);
  }
  glp_delete_prob(lp);
  return out;
}

}  // namespace moesim::ilp
