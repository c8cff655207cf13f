# Ruby fixture server (WEBrick): ruby server.rb PORT
# /api/invoice raises NoMethodError; the handler returns the backtrace in the body.
require 'webrick'
require 'json'

def invoice_total(invoice)
  invoice[:lines].sum { |l| l[:qty] * l[:price] }
end

server = WEBrick::HTTPServer.new(BindAddress: '127.0.0.1', Port: ARGV[0].to_i,
                                 Logger: WEBrick::Log.new(File::NULL), AccessLog: [])
server.mount_proc '/api/invoice' do |_req, res|
  begin
    invoice_total({})
  rescue StandardError => e
    res.status = 500
    res['Content-Type'] = 'text/plain'
    res.body = "#{e.class}: #{e.message}\n" + e.backtrace.map { |l| "\tfrom #{l}" }.join("\n") + "\n"
  end
end
server.mount_proc '/api/health' do |_req, res|
  res['Content-Type'] = 'application/json'
  res.body = JSON.generate(ok: true, checks: { db: 'up', cache: 'up' })
end
trap('TERM') { server.shutdown }
server.start
