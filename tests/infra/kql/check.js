// Parses and binds KQL queries with Microsoft's Kusto language service (@kusto/language-service-next), against the
// tables given. Reads {"tables": {name: "(col:type, ...)"}, "queries": [{"name", "text"}]} on stdin and writes, for
// each query, its error diagnostics: [{"name", "errors": [{"code", "message", "start", "length"}]}].
'use strict';
require('@kusto/language-service-next/bridge.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.js');

const K = Kusto.Language;
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const tables = Object.entries(input.tables).map(
  ([name, schema]) => new K.Symbols.TableSymbol.$ctor7(name, schema, null));
const database = new K.Symbols.DatabaseSymbol.$ctor1('appinsights', tables, false);
const globals = K.GlobalState.Default.WithDatabase(database);

const results = input.queries.map(({ name, text }) => {
  const diagnostics = K.KustoCode.ParseAndAnalyze(text, globals).GetDiagnostics();
  const errors = [];
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    if (d.Severity === 'Error') {
      errors.push({ code: d.Code, message: d.Message, start: d.Start, length: d.Length });
    }
  }
  return { name, errors };
});
process.stdout.write(JSON.stringify(results));
