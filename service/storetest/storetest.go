// Package storetest is the conformance suite every service.Store backend
// runs: one small _test.go per adapter calls Run with a factory, so all
// backends are held to the same behaviour, asserted engine-neutrally
// (errors.Is against the service sentinels, times within the coarsest
// engine precision and in UTC).
package storetest

import (
	"slices"
	"testing"

	"github.com/llmproxy/llmproxy/service"
)

// Run runs every conformance test against the stores newStore returns.
// newStore must return a fresh, migrated store that no other test uses and
// register its own cleanup (including Close) on t. Subtests are named
// Method/Behaviour and run in parallel, each on its own store.
func Run(t *testing.T, newStore func(t *testing.T) service.Store) {
	for _, method := range suite() {
		t.Run(method.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range method.cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, newStore(t))
				})
			}
		})
	}
}

// storeCase is one behaviour of one Store method, run on a fresh store.
type storeCase struct {
	name string
	run  func(t *testing.T, s service.Store)
}

// methodCases are the cases of one Store method; name is the method's name.
type methodCases struct {
	name  string
	cases []storeCase
}

func suite() []methodCases {
	return []methodCases{
		{"ProjectCreate", projectCreateCases},
		{"ProjectGetByID", projectGetByIDCases},
		{"ProjectList", projectListCases},
		{"ProjectUpdate", projectUpdateCases},
		{"TokenCreate", tokenCreateCases},
		{"TokenGetByID", tokenGetByIDCases},
		{"TokenGetByHash", tokenGetByHashCases},
		{"TokenAuthenticate", tokenAuthenticateCases},
		{"TokenList", tokenListCases},
		{"TokenAdmit", tokenAdmitCases},
		{"TokenAdmitByHash", append(slices.Clip(tokenAdmitByHashCases), admissionLeaseCases...)},
		{"TokenSettleReserved", tokenSettleReservedCases},
		{"TokenUpdate", tokenUpdateCases},
		{"TokenRevokeAllForProject", tokenRevokeAllForProjectCases},
		{"UsageInsertBatch", usageInsertBatchCases},
		{"UsageTotals", usageTotalsCases},
		{"UsageTotalsByDay", usageTotalsByDayCases},
		{"UsageList", usageListCases},
		{"UsagePrune", usagePruneCases},
		{"UsageRollUp", usageRollUpCases},
		{"AuditInsert", auditInsertCases},
		{"AuditList", auditListCases},
		{"SessionCreate", sessionCreateCases},
		{"SessionGetByHash", sessionGetByHashCases},
		{"SessionDelete", sessionDeleteCases},
		{"SessionDeleteExpired", sessionDeleteExpiredCases},
		{"ProjectDump", projectDumpCases},
		{"TokenDump", tokenDumpCases},
		{"UsageDump", usageDumpCases},
		{"UsageDailyDump", usageDailyDumpCases},
		{"AuditDump", auditDumpCases},
		{"TableCounts", tableCountsCases},
		{"ProjectInsertFullMany", projectInsertFullManyCases},
		{"TokenInsertFullMany", tokenInsertFullManyCases},
		{"UsageInsertFullMany", usageInsertFullManyCases},
		{"UsageDailyInsertFullMany", usageDailyInsertFullManyCases},
		{"AuditInsertFullMany", auditInsertFullManyCases},
		{"TableTruncateAll", tableTruncateAllCases},
		{"TableSequencesReset", tableSequencesResetCases},
		{"Backup", backupCases},
		{"InTx", inTxCases},
		{"Ping", pingCases},
		{"PoolStats", poolStatsCases},
	}
}
